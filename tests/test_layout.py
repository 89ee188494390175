"""The package's layout rules (docs/design.md): data flows one way, so the imports between folders do too."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "gameqa"
LIBRARY = ("media", "data", "subjective", "models", "losses", "train", "evaluate", "export")  # below the front ends
FRONT_ENDS = ("serve", "cluster", "bench", "cli")


def _imports() -> dict[str, set[str]]:
    """Each module of the package (``media/video.py``) -> the gameqa modules it imports, at the top or inside a
    function (``gameqa.errors``, ``gameqa.cli``, ...)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
                names.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
        found[path.relative_to(PACKAGE).as_posix()] = {n for n in names if n.split(".")[0] == "gameqa"}
    return found


def _folder(name: str) -> str:
    return name.split(".")[1] if name.count(".") else ""


def test_the_imports_between_folders_follow_the_data_flow():
    imports = _imports()
    assert "media/video.py" in imports and "gameqa.errors" in imports["media/video.py"]
    problems = []
    for module, names in imports.items():
        top = module.split("/")[0].removesuffix(".py")
        if top != "cli":  # the command line wires the package together; nothing builds on it
            problems += [f"{module} imports {n}" for n in names if _folder(n) == "cli"]
        if top == "media":  # the bottom of the flow: reading files
            problems += [f"{module} imports {n}" for n in names if _folder(n) not in ("media", "errors")]
        if top in LIBRARY:  # the library never reaches up into a front end (service, Ray batches, benchmarks)
            problems += [f"{module} imports {n}" for n in names if _folder(n) in FRONT_ENDS]
    assert not problems, "\n".join(sorted(set(problems)))
