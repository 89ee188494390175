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


def test_an_installed_wheel_carries_the_models_the_clip_and_the_configs(tmp_path):
    """Built and unpacked outside the checkout, the wheel scores the bundled clip, reads the configs the
    documentation names (``configs/...``) from inside the package, and points at no folder of a checkout."""
    import subprocess
    import sys
    import zipfile

    repo = PACKAGE.parents[1]
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"),
                            str(repo)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("gameqa-*.whl")
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path / "site"), "GAMEQA_CACHE": str(tmp_path / "cache")}

    def run(*args):
        return subprocess.run([sys.executable, *args], cwd=work, env=env, capture_output=True, text=True, timeout=300)

    probe = run("-c", "import gameqa.paths as p, gameqa.cli as c\n"
                      "from gameqa.train.config import load_config\n"
                      "from gameqa.data.ladder import load_ladder\n"
                      "from gameqa.data.games import load_corpus_config\n"
                      "from gameqa.data.cli import DEFAULT_GAMES, DEFAULT_MANIFEST\n"
                      "print(p.PACKAGE_DIR)\nprint(p.in_checkout())\n"
                      "print(load_config('configs/eraque/default.toml').model.backbone)\n"
                      "print(len(load_ladder('configs/corpus/ladder.toml').codecs))\n"
                      "print(len(load_corpus_config(DEFAULT_GAMES).games))\n"
                      "print(DEFAULT_MANIFEST)\n"
                      "print(c.missing_extra(ModuleNotFoundError('no torch', name='torch')))")
    assert probe.returncode == 0, probe.stderr[-2000:]
    package, checkout, backbone, specs, games, manifest, extra = probe.stdout.splitlines()
    assert Path(package) == (tmp_path / "site" / "gameqa").resolve() and checkout == "False"
    assert backbone == "efficientnet-lite0" and int(specs) > 0 and int(games) >= 4
    assert Path(manifest) == tmp_path / "cache" / "corpus" / "manifests" / "corpus.csv"
    assert extra.endswith("pip install 'gameqa[train]'")
    demo = run("-m", "gameqa.cli", "demo", "--no-per-frame")
    assert demo.returncode == 0 and "wesnoth_720p30.mp4" in demo.stdout, demo.stderr[-2000:]
