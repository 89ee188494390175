"""Where results go: JSON, JSONL and CSV writers and PNG figures, each all-or-nothing (temp file, then rename)."""
from __future__ import annotations

import json
import math
import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path
from typing import Callable, Sequence

from gameqa.csvio import csv_text
from gameqa.errors import ConfigError, GameQAError
from gameqa.result import ScoreResult

FORMATS = ("table", "json", "jsonl", "csv")


def json_safe(value):
    """``value`` with every NaN or infinite float replaced by None, so that it dumps as strict JSON (``null``, where
    Python would write ``NaN``, which JSON parsers refuse): a frame NIQE cannot score, an undefined correlation."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def render(results: Sequence[ScoreResult], fmt: str, per_frame: bool = False) -> str:
    """Results as text in one of the machine formats (json, jsonl, csv); JSON is strict (no NaN: null)."""
    if fmt == "json":
        rows = [json_safe(r.model_dump() if per_frame else r.summary()) for r in results]
        return json.dumps(rows, indent=2, allow_nan=False) + "\n"
    if fmt == "jsonl":
        return "".join(
            json.dumps(json_safe(r.model_dump() if per_frame else r.summary()), allow_nan=False) + "\n"
            for r in results
        )
    if fmt == "csv":
        if per_frame:  # one row per frame: easy to plot and join
            fields = ["path", "model", "model_version", "frame_index", "timestamp", "score", "overall"]
            return csv_text(fields, ({"path": r.path, "model": r.model, "model_version": r.model_version,
                                      "frame_index": i, "timestamp": t, "score": s, "overall": r.overall}
                                     for r in results
                                     for i, t, s in zip(r.frame_indices, r.timestamps, r.frame_scores)))
        rows = [r.summary() for r in results]
        return csv_text(list(rows[0]) if rows else ["path", "overall"], rows)
    raise ValueError(f"unknown format {fmt!r}")


def write_atomic(text: str, path: str | None) -> None:
    """Write text (UTF-8) to a file in one step (a reader never sees half a file), or to stdout when path is None.
    A file that cannot be written (its folder cannot be made, a folder in its place, no permission) is a
    GameQAError naming it, and nothing is left behind."""
    if path is None or path == "-":
        sys.stdout.write(text)
        return
    write_via_temp(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_via_temp(path: str | os.PathLike, write: Callable[[str], object]) -> None:
    """``write(tmp)`` writes the file's content to a temporary name beside ``path``, which then replaces ``path`` in
    one step (mode 0644). Its folder is made if need be; an OSError is a GameQAError naming ``path``, and no
    temporary file is left behind whatever fails. A link to a file has its target replaced (the link stays); a
    device, pipe or our own stdout (``/dev/null``, a FIFO, ``/dev/stdout``) is written through, never replaced."""
    target = os.fspath(path)
    fd = _own_descriptor(target)
    if fd is not None or _is_device(target):
        _write_through(path, write, fd)
        return
    if os.path.islink(target):
        target = os.path.realpath(target)
    folder = os.path.dirname(os.path.abspath(target))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise GameQAError(path, f"cannot make its folder {folder} ({exc.strerror or exc})") from None
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".gameqa-", suffix=".tmp")
        os.close(fd)
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are for everyone to read
        os.replace(tmp, target)
    except OSError as exc:
        raise GameQAError(path, f"cannot write ({exc.strerror or exc})") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _is_device(path: str) -> bool:
    """Whether ``path`` is an existing device, pipe or socket (``/dev/null``, a FIFO): written through, never
    replaced. A regular file, under /dev/shm too, is replaced as usual."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _own_descriptor(path: str) -> int | None:
    """The descriptor that ``/dev/stdout``, ``/dev/stderr``, ``/dev/fd/N`` or ``/proc/self/fd/N`` names, else None."""
    full = os.path.abspath(path)
    named = {"/dev/stdout": 1, "/dev/stderr": 2}
    if full in named:
        return named[full]
    for prefix in ("/dev/fd/", "/proc/self/fd/"):
        if full.startswith(prefix) and full[len(prefix):].isdigit():
            return int(full[len(prefix):])
    return None


def _write_through(path: str | os.PathLike, write: Callable[[str], object], fd: int | None) -> None:
    """The whole content made in a temporary file first (a failing ``write`` sends nothing), then sent into the
    device or pipe at ``path``, or through ``fd``, our own stdout or stderr (at its offset: stdout may be a file
    that holds earlier output; replacing the /dev/stdout link as root would break the system)."""
    with tempfile.TemporaryDirectory(prefix="gameqa-") as folder:
        tmp = os.path.join(folder, "out")
        try:
            write(tmp)
            with open(tmp, "rb") as src:
                if fd is not None:  # our own stdout or stderr: through its descriptor, at its offset
                    sys.stdout.flush()
                    sys.stderr.flush()
                    for block in iter(lambda: src.read(1 << 16), b""):
                        while block:
                            block = block[os.write(fd, block):]
                else:
                    with open(path, "ab") as dst:
                        shutil.copyfileobj(src, dst)
        except OSError as exc:
            raise GameQAError(path, f"cannot write ({exc.strerror or exc})") from None


def make_folder(folder: str | os.PathLike, what: str) -> Path:
    """Make ``folder`` (and its parents) or fail with one ConfigError naming it: ``cannot make <what> (reason)``."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(folder, f"cannot make {what} ({exc.strerror or exc})") from None
    return Path(folder)


def check_replaceable(out: Path, *, marker: str, owned: Callable[[Path], bool], what: str, option: str,
                      keep: Sequence[Path] = ()) -> None:
    """``out`` is about to be replaced as a whole (``replace_folder``): refuse a file, the current folder or a folder
    that holds it or any path of ``keep`` (an input), and a folder that is not an earlier ``what`` (no ``marker``
    file in it, or entries that ``owned`` does not accept), which replacing it would delete. ConfigError names
    ``out`` and says to choose another ``option``."""
    if out.exists() and not out.is_dir():
        raise ConfigError(out, "exists and is not a folder")
    if not out.is_dir():
        return
    root = os.path.realpath(out)
    for inside in (Path.cwd(), *keep):
        real = os.path.realpath(inside)
        if real == root or real.startswith(root + os.sep):
            held = "the current folder" if inside == Path.cwd() else str(inside)
            raise ConfigError(out, f"holds {held}, which replacing it would delete; choose another {option}")
    entries = list(out.iterdir())
    foreign = sorted(p.name for p in entries if not owned(p))
    if entries and (foreign or not (out / marker).is_file()):
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise ConfigError(out, f"exists and is not an earlier {what}" + (f" (it holds {shown})" if foreign else "")
                          + f"; replacing it would delete that: choose another {option}")


def replace_folder(staging: Path, out: Path) -> None:
    """Move the finished folder ``staging`` (beside ``out``) to ``out`` in one rename, replacing an earlier one there,
    which is deleted only once the new one is in place; the result is readable by all (mkdtemp makes 0700)."""
    os.chmod(staging, 0o755)
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def save_figure(fig, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Save a matplotlib figure as PNG in one step (``write_via_temp``) and close it; a failed save leaves no file
    behind."""
    try:
        write_via_temp(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return Path(path)
