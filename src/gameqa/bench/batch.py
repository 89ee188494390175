"""Batch benchmark: the same folder of short clips scored by the plain local scorer (one process), the
local process pool and Ray tasks; prints wall time, engine start-up, throughput and whether every
score is identical to the plain local run.

The clips are made here with PyAV's libx264 (real H.264), each with its own moving pattern and noise
level so the scores differ from clip to clip.
"""
from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

__all__ = ["make_clips", "bench_batch", "print_batch_table"]


def make_clips(folder: str | os.PathLike, count: int, size: tuple[int, int] = (192, 108), seconds: float = 1.0,
               fps: int = 10, seed: int = 0) -> list[Path]:
    """Write ``count`` small H.264 MP4 clips (moving gradient + per-clip noise) into ``folder``."""
    import av

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    width, height = size
    frames = max(1, round(seconds * fps))
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    paths = []
    for n in range(count):
        path = folder / f"clip_{n:05d}.mp4"
        paths.append(path)
        if path.exists():
            continue
        noise = float(rng.uniform(0, 40))
        freq = float(rng.uniform(0.02, 0.2))
        tmp = path.with_suffix(".tmp.mp4")
        with av.open(str(tmp), "w") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"preset": "ultrafast", "crf": "23"}
            for i in range(frames):
                phase = 2 * math.pi * i / frames
                base = 127 + 100 * np.sin(freq * xx + phase) * np.cos(freq * 0.7 * yy - phase)
                rgb = np.stack([base, np.roll(base, 7, axis=1), 255 - base], axis=-1)
                rgb = rgb + rng.normal(0, noise, rgb.shape)
                frame = av.VideoFrame.from_ndarray(np.clip(rgb, 0, 255).astype(np.uint8), format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        os.replace(tmp, path)
    return paths


def bench_batch(clips: int = 500, workers: int = 2, model: str = "niqe", sample: str = "fps:2",
                size: tuple[int, int] = (192, 108), chunk_size: int = 16, folder: Optional[str] = None,
                engines: Sequence[str] = ("local-1", "local", "ray")) -> list[dict]:
    """Score the same clips with each engine; one row per engine (``local-1`` is the plain scorer)."""
    from gameqa.cluster.batch import batch_score, read_rows

    with tempfile.TemporaryDirectory(prefix="gameqa-bench-batch-") as tmp:
        clip_dir = Path(folder) if folder else Path(tmp) / "clips"
        t0 = time.perf_counter()
        make_clips(clip_dir, clips, size=size)
        made_s = time.perf_counter() - t0
        rows, baseline = [], None
        for engine in engines:
            name, n_workers = ("local", 1) if engine == "local-1" else (engine, workers)
            out = str(Path(tmp) / f"{engine}.jsonl")
            report = batch_score([str(clip_dir)], model=model, out=out, engine=name, workers=n_workers,
                                 sample=sample, chunk_size=chunk_size, per_frame=True)
            scores = {r["path"]: (r["overall"], tuple(r["frame_scores"] or ())) for r in read_rows(out)}
            if baseline is None:
                baseline = scores
            same = scores == baseline
            diff = max((abs(scores[p][0] - baseline[p][0]) for p in baseline
                        if p in scores and scores[p][0] is not None and baseline[p][0] is not None), default=0.0)
            rows.append({"engine": engine, "workers": n_workers, "files": report.total, "scored": report.scored,
                         "failed": report.failed, "wall_s": report.seconds, "start_s": report.engine_start_s,
                         "files_per_s": report.files_per_s, "identical": same, "max_abs_diff": diff,
                         "clip_make_s": made_s})
        base = next((r for r in rows if r["engine"] == "local"), rows[0])
        for r in rows:
            r["vs_local"] = r["wall_s"] / base["wall_s"] if base["wall_s"] else float("nan")
            r["vs_local_after_start"] = ((r["wall_s"] - r["start_s"]) / (base["wall_s"] - base["start_s"])
                                         if base["wall_s"] > base["start_s"] else float("nan"))
        return rows


def print_batch_table(rows: list[dict], console=None) -> None:
    """The side-by-side table."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    files = rows[0]["files"] if rows else 0
    table = Table(title=f"batch scoring of {files} clips (cpu cores: {os.cpu_count()})")
    for col in ("engine", "workers", "scored", "failed", "wall s", "engine start s", "files/s",
                "x local", "x local (after start)", "scores identical"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["engine"], str(r["workers"]), str(r["scored"]), str(r["failed"]), f"{r['wall_s']:.2f}",
                      f"{r['start_s']:.2f}", f"{r['files_per_s']:.1f}", f"{r['vs_local']:.2f}",
                      f"{r['vs_local_after_start']:.2f}",
                      "yes" if r["identical"] else f"NO (max diff {r['max_abs_diff']:.3g})")
    console.print(table)
