"""Batch benchmark: the same folder of short clips scored by the plain local batch (one process), the
local process pool and the Ray engine; prints wall time (engine start-up and shut-down included),
start-up, throughput, the ratios to the plain and the pooled local runs, and whether every score is
identical to the plain local run.

By default the clips are short gameplay clips (2 s of 640x360 H.264) cut from the bundled Wesnoth
capture (or from ``source``: a video or a folder of videos) with ffmpeg's libx264, each with its own
start, crop, flip and CRF so the scores differ from clip to clip. ``make_clips`` writes tiny synthetic
clips instead (moving pattern + noise, PyAV's libx264), for tests.
"""
from __future__ import annotations

from gameqa.models.registry import DEFAULT_MODEL
from gameqa.sinks import make_folder

import math
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

__all__ = ["make_clips", "make_gameplay_clips", "bundled_gameplay_clip", "bench_batch", "print_batch_table",
           "BENCH_ENGINES"]

BENCH_ENGINES = ("local-1", "local", "ray")  # local-1: the plain local batch (this process, one worker)
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov")


def make_clips(folder: str | os.PathLike, count: int, size: tuple[int, int] = (192, 108), seconds: float = 1.0,
               fps: int = 10, seed: int = 0) -> list[Path]:
    """Write ``count`` small H.264 MP4 clips (moving gradient + per-clip noise) into ``folder``."""
    import av

    folder = Path(folder)
    make_folder(folder, "the clip folder")
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


def bundled_gameplay_clip() -> Path:
    """The 4 s 720p30 Wesnoth capture shipped with gameqa."""
    from importlib import resources

    return Path(str(resources.files("gameqa") / "assets" / "wesnoth_720p30.mp4"))


def make_gameplay_clips(folder: str | os.PathLike, count: int, source: str | os.PathLike | None = None,
                        size: tuple[int, int] = (640, 360), seconds: float = 2.0, fps: int = 30, seed: int = 0,
                        jobs: Optional[int] = None) -> list[Path]:
    """Write ``count`` short H.264 clips cut from real gameplay (``source``: a video or a folder of videos;
    default the bundled capture) into ``folder``: each its own start, crop (1-1.6x zoom), flip and CRF
    (20-40), scaled to ``size``, encoded by ffmpeg's libx264. Clips already there are kept (the name holds
    source, size, length and seed)."""
    from gameqa.errors import MediaError
    from gameqa.ffmpeg import run_ffmpeg
    from gameqa.media.video import probe_video

    source = Path(source) if source is not None else bundled_gameplay_clip()
    if source.is_dir():
        sources = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    else:
        sources = [source]
    if not sources:
        raise MediaError(str(source), "folder holds no video files to cut clips from")
    durations = [probe_video(p).duration for p in sources]
    for path, duration in zip(sources, durations):
        if duration < seconds:
            raise MediaError(str(path), f"is {duration:.2f} s long, shorter than the {seconds:g} s clips")
    folder = Path(folder)
    make_folder(folder, "the clip folder")
    width, height = size
    rng = np.random.default_rng(seed)
    tag = f"{source.stem}_{width}x{height}_{seconds:g}s_{fps}fps_s{seed}"
    plans = []
    for n in range(count):
        k = n % len(sources)
        start = float(rng.uniform(0, durations[k] - seconds))
        zoom, fx, fy = float(rng.uniform(1.0, 1.6)), float(rng.uniform(0, 1)), float(rng.uniform(0, 1))
        flip, crf = bool(rng.integers(0, 2)), int(rng.integers(20, 41))
        path = folder / f"{tag}_{n:05d}.mp4"
        chain = [f"crop=trunc(iw/{zoom:.4f}/2)*2:trunc(ih/{zoom:.4f}/2)*2:(iw-ow)*{fx:.4f}:(ih-oh)*{fy:.4f}",
                 f"scale={width}:{height}:flags=bicubic", *(["hflip"] if flip else []), f"fps={fps}",
                 "format=yuv420p"]
        args = ["-y", "-ss", f"{start:.3f}", "-i", str(sources[k]), "-t", f"{seconds:g}", "-an",
                "-vf", ",".join(chain), "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf),
                "-f", "mp4"]
        plans.append((path, args))

    def make(plan) -> None:
        path, args = plan
        if path.exists():
            return
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            run_ffmpeg([*args, str(tmp)], path=str(path))
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()

    with ThreadPoolExecutor(max_workers=max(1, jobs or os.cpu_count() or 1)) as pool:
        list(pool.map(make, plans))
    return [path for path, _ in plans]


def bench_batch(clips: int = 500, workers: int = 2, model: str = DEFAULT_MODEL, sample: str = "fps:2",
                size: tuple[int, int] = (640, 360), seconds: float = 2.0, chunk_size: int = 8,
                source: Optional[str] = None, synthetic: bool = False, folder: Optional[str] = None,
                engines: Sequence[str] = BENCH_ENGINES, progress: Optional[Callable[[dict], None]] = None) -> dict:
    """Score the same clips with each engine; returns ``{"rows": [one per engine], "clips": ...}``.

    ``local-1`` is the plain local batch (this process); ``local`` the process pool and ``ray`` the Ray
    engine, both with ``workers``. Each row's ``wall_s`` is the whole job (engine start-up and shut-down
    included); ``identical`` compares every file's overall and per-frame scores exactly with the first
    engine's. ``progress(row)`` sees each engine's row as soon as it is measured."""
    from gameqa.cluster.batch import batch_score, read_rows
    from gameqa.errors import GameQAError
    from gameqa.scoring import Scorer

    with tempfile.TemporaryDirectory(prefix="gameqa-bench-batch-") as tmp:
        clip_dir = Path(folder) if folder else Path(tmp) / "clips"
        t0 = time.perf_counter()
        if synthetic:
            # a folder per setting: a clip is reused only for the same size and length
            paths = make_clips(Path(clip_dir) / f"synthetic_{size[0]}x{size[1]}_{seconds:g}s", clips, size=size,
                               seconds=seconds)
        else:
            paths = make_gameplay_clips(clip_dir, clips, source=source, size=size, seconds=seconds)
        made_s = time.perf_counter() - t0
        Scorer(model=model, sample=sample)  # imports and model registry warm before any engine is timed
        rows, baseline, base_order = [], None, None
        for engine in engines:
            name, n_workers = ("local", 1) if engine == "local-1" else (engine, workers)
            out = str(Path(tmp) / f"{engine}.jsonl")
            load_before = os.getloadavg()[0]
            t_job = time.perf_counter()  # the whole call: model check, engine start-up, scoring, shut-down
            try:
                report = batch_score([str(p) for p in paths], model=model, out=out, engine=name,
                                     workers=n_workers, sample=sample, chunk_size=chunk_size, per_frame=True)
            except GameQAError as exc:  # one engine that cannot run leaves the others' rows
                rows.append({"engine": engine, "workers": n_workers, "error": str(exc),
                             "wall_s": time.perf_counter() - t_job})
                if progress is not None:
                    progress(rows[-1])
                continue
            wall_s = time.perf_counter() - t_job
            written = read_rows(out)
            scores = {r["path"]: (r["overall"], tuple(r["frame_scores"] or ())) for r in written}
            order = [r["path"] for r in written]
            if baseline is None:
                baseline, base_order = scores, order
            diff = max((abs(scores[p][0] - baseline[p][0]) for p in baseline
                        if p in scores and scores[p][0] is not None and baseline[p][0] is not None), default=0.0)
            rows.append({"engine": engine, "workers": n_workers, "files": report.total, "scored": report.scored,
                         "failed": report.failed, "wall_s": wall_s, "start_s": report.engine_start_s,
                         "stop_s": report.engine_stop_s, "files_per_s": (report.scored + report.failed) / wall_s,
                         "identical": scores == baseline, "same_order": order == base_order,
                         "max_abs_diff": diff, "load_before": load_before, "load_after": os.getloadavg()[0]})
            if progress is not None:
                progress(rows[-1])
        plain = next((r for r in rows if r["engine"] == "local-1" and "error" not in r), None)
        pool = next((r for r in rows if r["engine"] == "local" and "error" not in r), None)
        for r in rows:
            if "error" in r:
                continue
            r["x_plain"] = r["wall_s"] / plain["wall_s"] if plain else float("nan")
            r["x_pool"] = r["wall_s"] / pool["wall_s"] if pool else float("nan")
            r["x_pool_after_start"] = ((r["wall_s"] - r["start_s"]) / (pool["wall_s"] - pool["start_s"])
                                       if pool else float("nan"))
        return {"rows": rows, "clips": len(paths), "clip_make_s": made_s, "size": list(size), "seconds": seconds,
                "synthetic": synthetic, "source": str(source or ("synthetic" if synthetic else bundled_gameplay_clip())),
                "model": model, "sample": sample, "chunk_size": chunk_size, "cpu_count": os.cpu_count()}


def print_batch_table(result: dict, console=None) -> None:
    """The side-by-side table (wall time is the whole job: engine start-up and shut-down included)."""
    from gameqa.console import Table, console as plain_console

    console = console or plain_console()
    rows = result["rows"]
    kind = "synthetic" if result["synthetic"] else "gameplay"
    width, height = result["size"]
    loads = [r[k] for r in rows for k in ("load_before", "load_after") if k in r]
    table = Table(title=f"{result['clips']} {kind} clips {width}x{height} {result['seconds']:g} s, {result['model']} "
                        f"{result['sample']}, chunk {result['chunk_size']}, {result['cpu_count']} cores",
                  caption=f"load (1 min) {min(loads):.1f}-{max(loads):.1f}; start-up and shut-down are inside wall s"
                  if loads else None)
    for col in ("engine", "workers", "ok/failed", "wall s", "start s", "stop s", "files/s", "x plain",
                "x pool", "identical"):
        table.add_column(col, justify="right")
    for r in rows:
        if "error" in r:
            table.add_row(r["engine"], str(r["workers"]), "-", f"{r['wall_s']:.2f}", "-", "-", "-", "-", "-",
                          f"NO RUN: {r['error']}")
            continue
        table.add_row(r["engine"], str(r["workers"]), f"{r['scored']}/{r['failed']}", f"{r['wall_s']:.2f}",
                      f"{r['start_s']:.2f}", f"{r['stop_s']:.2f}", f"{r['files_per_s']:.1f}", f"{r['x_plain']:.2f}",
                      f"{r['x_pool']:.2f}",
                      ("yes" if r["same_order"] else "yes, reordered") if r["identical"]
                      else f"NO ({r['max_abs_diff']:.2g})")
    console.print(table)
