"""Where results go: JSON, JSONL and CSV writers and PNG figures, each all-or-nothing (temp file, then rename)."""
from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from gameqa.errors import GameQAError
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
        buf = io.StringIO()
        if per_frame:  # one row per frame: easy to plot and join
            fields = ["path", "model", "model_version", "frame_index", "timestamp", "score", "overall"]
            writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
            writer.writeheader()
            for r in results:
                for i, t, s in zip(r.frame_indices, r.timestamps, r.frame_scores):
                    writer.writerow({"path": r.path, "model": r.model, "model_version": r.model_version,
                                     "frame_index": i, "timestamp": t, "score": s, "overall": r.overall})
        else:
            rows = [r.summary() for r in results]
            fields = list(rows[0]) if rows else ["path", "overall"]
            writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        return buf.getvalue()
    raise ValueError(f"unknown format {fmt!r}")


def write_atomic(text: str, path: str | None) -> None:
    """Write text to a file in one step (a reader never sees half a file), or to stdout when path is None.
    A file that cannot be written (its folder cannot be made, a folder in its place, no permission) is a
    GameQAError naming it, and nothing is left behind."""
    if path is None or path == "-":
        sys.stdout.write(text)
        return
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise GameQAError(path, f"cannot make its folder {folder} ({exc.strerror or exc})") from None
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".gameqa-", suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are for everyone to read
        os.replace(tmp, path)
    except OSError as exc:
        raise GameQAError(path, f"cannot write ({exc.strerror or exc})") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def save_figure(fig, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Save a matplotlib figure as PNG in one step (written beside ``path`` as ``.NAME.tmp.png``, then moved) and
    close it; a failed save leaves no file behind."""
    out = Path(path)
    tmp = out.with_name(f".{out.stem}.tmp.png")
    try:
        fig.savefig(tmp, dpi=dpi)
        os.replace(tmp, out)
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
        if tmp.exists():
            tmp.unlink()
    return out
