"""Record real gameplay into corpus sources: game under Xvfb, ffmpeg x11grab, frozen-frame check.

One *session* starts a private Xvfb display, launches a game recipe (see gameqa.data.games), waits its
warm-up, plays its scripted xdotool steps, then records one or more consecutive segments losslessly into
a scratch directory (raw frames, so the game keeps the CPU). After every process is gone, each segment is
checked for duplicated / frozen frames and the capture's real frame rate; accepted segments are encoded
(near-lossless by default) to a temporary name and renamed into place, rejected ones are dropped.
"""
from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from gameqa.data.games import CaptureSettings, CorpusConfig, GameRecipe, ResolvedRun, Step, Variant
from gameqa.errors import GameQAError, MediaError


class GameStartError(GameQAError):
    """A game (or the X server) did not start or died; ``whole_game`` is True when no variant can work."""

    def __init__(self, path, problem: str, whole_game: bool = False):
        super().__init__(path, problem)
        self.whole_game = whole_game


@dataclass(frozen=True)
class FrameCheck:
    """Result of the frozen / duplicated frame check on one recorded clip."""

    frames: int
    measured_fps: float
    duplicate_share: float
    longest_frozen_s: float
    missing_frames: int
    blank: bool
    accepted: bool
    reason: str


@dataclass(frozen=True)
class CaptureReport:
    """What happened to one source: where it went, how fluid the capture was, and whether it was kept."""

    game: str
    variant: str
    segment: int
    path: str | None
    frames: int
    measured_fps: float
    duplicate_share: float
    longest_frozen_s: float
    accepted: bool
    reason: str

    def to_dict(self) -> dict:
        """Plain dict for JSON manifests."""
        return asdict(self)


# --------------------------------------------------------------------------------------------- ffmpeg


def _has_x11grab(exe: str) -> bool:
    try:
        listing = subprocess.run([exe, "-hide_banner", "-devices"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return any(line.split()[1:2] == ["x11grab"] for line in listing.stdout.splitlines() if line.strip())


@lru_cache(maxsize=1)
def find_ffmpeg() -> str:
    """An ffmpeg executable with the x11grab input: imageio-ffmpeg's if it has it, else the system one."""
    candidates = []
    try:
        import imageio_ffmpeg

        candidates.append(imageio_ffmpeg.get_ffmpeg_exe())
    except Exception:  # not installed, or its binary is missing
        pass
    system = shutil.which("ffmpeg")
    if system:
        candidates.append(system)
    for exe in candidates:
        if _has_x11grab(exe):
            return exe
    raise GameStartError("ffmpeg", "no ffmpeg with the x11grab input found (apt-get install ffmpeg)", whole_game=True)


# ------------------------------------------------------------------------------------ frame checking


def check_frames(path: str | os.PathLike, fps: float, settings: CaptureSettings | None = None) -> FrameCheck:
    """Count duplicated / frozen frames and measure the real frame rate of a (lossless) clip.

    A pair of consecutive frames is a duplicate when their pixels are identical (or, with
    ``settings.duplicate_mad > 0``, when their mean absolute gray difference is at most that). Gaps in
    the timestamps (the grabber fell behind) count as that many missing, hence repeated, frames. The
    clip is rejected when the duplicate share exceeds ``max_duplicate_share``, a frozen run lasts longer
    than ``max_frozen_s``, the measured frame rate is under ``min_fps_ratio * fps``, or it is blank.
    """
    import av

    settings = settings or CaptureSettings()
    path = os.fspath(path)
    try:
        container = av.open(path)
    except (av.error.FFmpegError, OSError) as err:
        raise MediaError(path, f"cannot open: {err}") from None
    frames = 0
    duplicates = missing = changed = 0
    run = longest_run = 0
    first_time = last_time = None
    previous_planes = previous_gray = None
    detail = []
    interval = 1.0 / fps
    with container:
        stream = container.streams.video[0]
        try:
            for frame in container.decode(stream):
                planes = [bytes(plane) for plane in frame.planes]
                small = frame.reformat(width=max(frame.width // 4, 1), height=max(frame.height // 4, 1), format="gray")
                gray = small.to_ndarray().astype(np.float32)
                time_s = frame.time if frame.time is not None else frames * interval
                if frames % 15 == 0:
                    detail.append(float(gray.std()))
                if previous_planes is not None:
                    gap = int(round((time_s - last_time) / interval)) - 1
                    if gap > 0:  # the grabber skipped slots: they will be filled with repeats
                        missing += gap
                        run += gap
                    same = planes == previous_planes
                    if not same and settings.duplicate_mad > 0:
                        same = float(np.abs(gray - previous_gray).mean()) <= settings.duplicate_mad
                    if same:
                        duplicates += 1
                        run += 1
                    else:
                        changed += 1
                        run = 0
                    longest_run = max(longest_run, run)
                else:
                    first_time = time_s
                previous_planes, previous_gray, last_time = planes, gray, time_s
                frames += 1
        except av.error.FFmpegError as err:
            raise MediaError(path, f"cannot decode: {err}") from None
    if frames < 2:
        return FrameCheck(frames, 0.0, 1.0, 0.0, 0, True, False, f"only {frames} frame(s) recorded")
    span = last_time - first_time
    measured_fps = (frames - 1) / span if span > 0 else float(fps)
    transitions = duplicates + missing + changed
    duplicate_share = (duplicates + missing) / transitions
    longest_frozen_s = longest_run * interval
    blank = max(detail) < 1.0
    reasons = []
    if blank:
        reasons.append("blank screen (no detail in any sampled frame)")
    if duplicate_share > settings.max_duplicate_share:
        reasons.append(f"{duplicate_share:.0%} duplicated frames > {settings.max_duplicate_share:.0%}")
    if longest_frozen_s > settings.max_frozen_s:
        reasons.append(f"frozen for {longest_frozen_s:.2f} s > {settings.max_frozen_s:.2f} s")
    if measured_fps < settings.min_fps_ratio * fps:
        reasons.append(f"captured at {measured_fps:.1f} fps < {settings.min_fps_ratio * fps:.1f}")
    return FrameCheck(
        frames=frames,
        measured_fps=round(measured_fps, 2),
        duplicate_share=round(duplicate_share, 4),
        longest_frozen_s=round(longest_frozen_s, 3),
        missing_frames=missing,
        blank=blank,
        accepted=not reasons,
        reason="; ".join(reasons) if reasons else "ok",
    )


# ---------------------------------------------------------------------------------------- processes


def _stop_group(process: subprocess.Popen | None, grace_s: float = 3.0) -> None:
    """Terminate a process started with start_new_session=True and everything in its process group."""
    if process is None:
        return
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
        try:  # leader gone: make sure no child of the group survives it
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return


def start_xvfb(size: tuple[int, int], display: int | None = None, timeout_s: float = 15.0):
    """Start Xvfb on ``display`` (or the first free one, chosen by Xvfb itself); return (process, number)."""
    exe = shutil.which("Xvfb")
    if exe is None:
        raise GameStartError("Xvfb", "not found (apt-get install xvfb)", whole_game=True)
    screen = f"{size[0]}x{size[1]}x24"
    read_fd, write_fd = os.pipe()
    args = [exe]
    if display is not None:
        args.append(f":{display}")
    args += ["-displayfd", str(write_fd), "-screen", "0", screen, "-nolisten", "tcp", "-noreset"]
    try:
        process = subprocess.Popen(args, pass_fds=(write_fd,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, start_new_session=True)
    finally:
        os.close(write_fd)
    text = b""
    deadline = time.monotonic() + timeout_s
    try:
        while not text.endswith(b"\n"):
            left = deadline - time.monotonic()
            ready, _, _ = select.select([read_fd], [], [], max(left, 0))
            if not ready:
                raise GameStartError("Xvfb", f"no display after {timeout_s:.0f} s")
            chunk = os.read(read_fd, 64)
            if not chunk:
                error = process.stderr.read().decode(errors="replace").strip().splitlines()
                raise GameStartError("Xvfb", f"failed to start: {error[-1] if error else 'no message'}")
            text += chunk
    except BaseException:
        _stop_group(process)
        raise
    finally:
        os.close(read_fd)
    process.stderr.close()
    return process, int(text.strip())


def _xdotool(step: Step, env: dict[str, str]) -> None:
    if step.kind == "wait":
        time.sleep(float(step.value))
        return
    if step.kind == "click":
        x, y, *button = step.value
        args = ["mousemove", str(x), str(y), "click", str(button[0] if button else 1)]
    elif step.kind == "mousemove":
        args = ["mousemove", str(step.value[0]), str(step.value[1])]
    elif step.kind == "type":
        args = ["type", "--delay", "60", step.value]
    else:  # key / keydown / keyup
        args = [step.kind, "--delay", "120", *step.value.split()]
    try:
        subprocess.run(["xdotool", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=30, check=False)
    except FileNotFoundError:
        raise GameStartError("xdotool", "not found (apt-get install xdotool)", whole_game=True) from None


class _LiveSteps(threading.Thread):
    """Plays a step list over and over while recording (e.g. keep jumping), until stopped."""

    def __init__(self, steps: Sequence[Step], env: dict[str, str]):
        super().__init__(daemon=True)
        self.steps, self.env, self.halt = tuple(steps), env, threading.Event()

    def run(self) -> None:
        while self.steps and not self.halt.is_set():
            for step in self.steps:
                if self.halt.is_set():
                    return
                if step.kind == "wait":
                    self.halt.wait(float(step.value))
                else:
                    try:
                        _xdotool(step, self.env)
                    except GameStartError:
                        return


def _log_tail(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1][:200] if lines else "no output"


def _substitute(text: str, home: Path) -> str:
    return text.replace("{home}", str(home))


def _game_env(run: ResolvedRun, display: int, home: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DISPLAY", "WAYLAND", "XDG_"))}
    env.update({
        "DISPLAY": f":{display}",
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local/share"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "SDL_AUDIODRIVER": "dummy",
        "LIBGL_ALWAYS_SOFTWARE": "1",
    })
    env.update({key: _substitute(value, home) for key, value in run.env.items()})
    return env


def _segment_paths(out_path: str | os.PathLike) -> tuple[Path, Path]:
    final = Path(out_path)
    return final, final.with_name(f".{final.stem}.partial{final.suffix}")


def encode_source(raw_path: Path, out_path: str | os.PathLike, fps: int, seconds: float,
                  settings: CaptureSettings) -> None:
    """Encode a raw capture to ``out_path`` at a constant ``fps``, writing a temp file then renaming it."""
    final, partial = _segment_paths(out_path)
    final.parent.mkdir(parents=True, exist_ok=True)
    args = [find_ffmpeg(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(raw_path),
            "-fps_mode", "cfr", "-r", str(fps), "-frames:v", str(int(round(seconds * fps))),
            *settings.encode_args, "-an", "-y", str(partial)]
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=max(120.0, 30 * seconds))
        if result.returncode != 0:
            raise MediaError(final, f"encoding failed: {result.stderr.strip().splitlines()[-1:]}")
        os.replace(partial, final)
    finally:
        partial.unlink(missing_ok=True)


def capture_session(run: ResolvedRun, out_paths: Sequence[str | os.PathLike | None], seconds: float,
                    fps: int = 30, size: tuple[int, int] = (1280, 720), display: int | None = None, *,
                    settings: CaptureSettings | None = None, home_dir: str | os.PathLike | None = None,
                    scratch_dir: str | os.PathLike | None = None, on_segment=None) -> list[CaptureReport]:
    """Start one game session and record ``len(out_paths)`` consecutive segments of ``seconds`` each.

    Segment k is saved to ``out_paths[k]`` only if it passes check_frames (None: record it to keep the
    timing but do not save it). Raises GameStartError when Xvfb or the game does not start or dies
    before recording; all processes are stopped in every case.
    """
    settings = replace(settings or CaptureSettings(), fps=fps, size=size, seconds=seconds)
    ffmpeg = find_ffmpeg()
    if shutil.which(run.command[0]) is None and not Path(run.command[0]).is_file():
        raise GameStartError(run.game, f"command not found: {run.command[0]} (is the game installed?)", whole_game=True)
    scratch_root = scratch_dir or ("/dev/shm" if os.path.isdir("/dev/shm") else None)
    with tempfile.TemporaryDirectory(prefix="gameqa-capture-", dir=scratch_root) as scratch:
        scratch = Path(scratch)
        home = Path(home_dir) if home_dir is not None else scratch / "home"
        for rel, content in run.files.items():
            target = home / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(_substitute(content, home))
        home.mkdir(parents=True, exist_ok=True)
        log_path = scratch / "game.log"
        xvfb = game = live = None
        raw_paths: list[Path | None] = []
        try:
            xvfb, number = start_xvfb(size, display)
            env = _game_env(run, number, home)
            command = [_substitute(arg, home) for arg in run.command]
            with open(log_path, "wb") as log:
                game = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                        start_new_session=True, cwd=home)

            def require_alive(when: str) -> None:
                code = game.poll()
                if code is not None:
                    raise GameStartError(run.game, f"[{run.variant}] exited with code {code} {when}: "
                                                   f"{_log_tail(log_path)}")

            deadline = time.monotonic() + run.warmup_s
            while time.monotonic() < deadline:
                require_alive("during warm-up")
                time.sleep(min(0.5, max(deadline - time.monotonic(), 0)))
            for step in run.steps:
                _xdotool(step, env)
            require_alive("after the start-up steps")
            live = _LiveSteps(run.live_steps, env)
            live.start()
            for index in range(len(out_paths)):
                if index:
                    time.sleep(run.segment_gap_s)
                raw = scratch / f"segment{index:02d}.nut"
                grab = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-f", "x11grab", "-draw_mouse", "0",
                        "-framerate", str(fps), "-video_size", f"{size[0]}x{size[1]}", "-i", f":{number}.0+0,0",
                        "-t", f"{seconds:.3f}", "-fps_mode", "passthrough", "-c:v", "rawvideo", "-y", str(raw)]
                recorder = subprocess.Popen(grab, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.PIPE, start_new_session=True)
                try:
                    _, error = recorder.communicate(timeout=seconds + 30)
                except subprocess.TimeoutExpired:
                    _stop_group(recorder)
                    raise GameStartError(run.game, f"[{run.variant}] x11grab did not finish in {seconds + 30:.0f} s")
                if recorder.returncode != 0:
                    raise GameStartError(run.game, f"[{run.variant}] x11grab failed: "
                                                   f"{error.decode(errors='replace').strip()[-200:]}")
                alive = game.poll() is None
                raw_paths.append(raw if alive else None)
                if not alive:
                    break
        finally:
            if live is not None:
                live.halt.set()
            _stop_group(game)
            _stop_group(xvfb)
            if live is not None:
                live.join(timeout=35)
        reports = []
        for index, out_path in enumerate(out_paths):
            raw = raw_paths[index] if index < len(raw_paths) else None
            if raw is None:
                why = f"game exited before segment {index} ended: {_log_tail(log_path)}"
                report = CaptureReport(run.game, run.variant, index, None, 0, 0.0, 1.0, 0.0, False, why)
            else:
                check = check_frames(raw, fps, settings)
                saved = None
                if check.accepted and out_path is not None:
                    encode_source(raw, out_path, fps, seconds, settings)
                    saved = os.fspath(out_path)
                report = CaptureReport(run.game, run.variant, index, saved, check.frames, check.measured_fps,
                                       check.duplicate_share, check.longest_frozen_s, check.accepted, check.reason)
                raw.unlink()
            if on_segment is not None and out_path is not None:
                on_segment(report)
            reports.append(report)
        return reports


def capture_source(game_recipe: GameRecipe, variant: Variant | str | None, out_path: str | os.PathLike,
                   seconds: float = 8.0, fps: int = 30, size: tuple[int, int] = (1280, 720),
                   display: int | None = None, *, settings: CaptureSettings | None = None,
                   home_dir: str | os.PathLike | None = None) -> CaptureReport:
    """Record one source of ``seconds`` from a game variant; the file is written only if accepted."""
    run = game_recipe.resolved(variant)
    return capture_session(run, [out_path], seconds, fps, size, display, settings=settings, home_dir=home_dir)[0]


# ------------------------------------------------------------------------------------------- corpus


def source_name(game: str, variant: str, segment: int, container: str = "mkv") -> str:
    """Deterministic file name of one source: ``<game>--<variant>--<segment>.<container>``."""
    return f"{game}--{variant}--{segment:02d}.{container}"


def unrecorded_variants(reports: Sequence[CaptureReport], out_dir: str | os.PathLike) -> dict[str, str]:
    """The variants these reports tried that have no source at all in ``out_dir`` (every segment rejected), each
    with the reason of its most duplicated capture (often a game rendering slower than the capture rate here)."""
    out_dir = Path(out_dir)
    worst: dict[str, CaptureReport] = {}
    for r in reports:
        key = f"{r.game}/{r.variant}"
        if key not in worst or r.duplicate_share > worst[key].duplicate_share:
            worst[key] = r
    return {key: r.reason for key, r in sorted(worst.items())
            if not any(out_dir.glob(f"{r.game}--{r.variant}--*"))}  # one look on disk per variant


def capture_plan(config: CorpusConfig, out_dir: str | os.PathLike, wanted: set[str] | None = None) -> list:
    """What is left to record: (recipe, run, paths) for every variant missing a segment in ``out_dir``, its paths up
    to the last missing one with None for those present; ``wanted`` limits it to games or game/variant names."""
    out_dir = Path(out_dir)
    plan = []
    for recipe in config.games:
        for variant in recipe.variants or (None,):
            run = recipe.resolved(variant)
            if wanted is not None and run.game not in wanted and f"{run.game}/{run.variant}" not in wanted:
                continue
            paths = [out_dir / source_name(run.game, run.variant, k, config.capture.container)
                     for k in range(run.segments)]
            missing = [k for k, p in enumerate(paths) if not p.exists()]
            if missing:
                plan.append((recipe, run, [p if k in missing else None for k, p in enumerate(paths)][: max(missing) + 1]))
    return plan


def capture_tools_missing() -> list[str]:
    """What recording needs and this machine lacks, one phrase each with how to get it (empty: nothing)."""
    missing = [f"{name} ({how})" for name, how in (("Xvfb", "apt-get install xvfb"), ("xdotool", "apt-get install xdotool"))
               if shutil.which(name) is None]
    try:
        find_ffmpeg()
    except GameStartError:
        missing.append("an ffmpeg with the x11grab input (apt-get install ffmpeg)")
    return missing


def capture_all(config: CorpusConfig, out_dir: str | os.PathLike, *, only: Iterable[str] | None = None,
                home_root: str | os.PathLike | None = None, console=None) -> list[CaptureReport]:
    """Record every game variant of ``config`` into ``out_dir``; resumable, one game's failure skips only it.

    ``only`` limits the run to entries named ``"<game>"`` or ``"<game>/<variant>"``. Sources already
    present are skipped. Every new report is appended to ``out_dir/captures.jsonl``.
    Game homes (caches, configs) persist under ``home_root`` (default ``out_dir/.homes``).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.text import Text

    from gameqa.console import console as plain_console

    console = console or plain_console()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    home_root = Path(home_root) if home_root is not None else out_dir / ".homes"
    settings = config.capture
    wanted = set(only) if only is not None else None
    if wanted is not None:
        known = {g.name for g in config.games} | {f"{g.name}/{v.name}" for g in config.games for v in g.variants}
        unknown = wanted - known
        if unknown:
            raise GameQAError(config.path, f"unknown games or variants {sorted(unknown)}")
    plan = capture_plan(config, out_dir, wanted)
    total = sum(sum(p is not None for p in paths) for _, _, paths in plan)
    reports: list[CaptureReport] = []
    failed_games: set[str] = set()
    manifest = out_dir / "captures.jsonl"
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("capturing", total=total)

        def record(report: CaptureReport) -> None:
            reports.append(report)
            with open(manifest, "a") as handle:
                handle.write(json.dumps(report.to_dict()) + "\n")
            mark = ("kept", "green") if report.accepted else ("rejected", "red")
            progress.console.print(Text.assemble(
                f"{report.game}/{report.variant}#{report.segment}: ", mark,
                f" {report.measured_fps:.1f} fps, {report.duplicate_share:.1%} duplicated - {report.reason}"))
            progress.advance(task)

        for recipe, run, paths in plan:
            pending = sum(p is not None for p in paths)
            if recipe.name in failed_games:
                progress.advance(task, pending)
                continue
            progress.update(task, description=f"{run.game}/{run.variant}")
            home = home_root / run.game
            try:
                capture_session(run, paths, settings.seconds, settings.fps, settings.size, settings=settings,
                                home_dir=home, on_segment=record)
            except GameStartError as err:
                progress.console.print(f"{run.game}/{run.variant}: failed: {err}", style="red", markup=False)
                if err.whole_game:
                    failed_games.add(recipe.name)
                done = sum(1 for r in reports if (r.game, r.variant) == (run.game, run.variant))
                progress.advance(task, pending - done)
    return reports


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m gameqa.data.capture CONFIG OUT_DIR [--only game[/variant] ...]``: record the corpus."""
    import argparse

    from gameqa.console import exit_on_terminate
    from gameqa.data.games import load_corpus_config

    exit_on_terminate()  # a kill stops the displays and games started in their own sessions
    parser = argparse.ArgumentParser(description="Record gameplay sources under Xvfb (resumable).")
    parser.add_argument("config", help="games.toml")
    parser.add_argument("out_dir", help="folder for the sources and captures.jsonl")
    parser.add_argument("--only", action="append", help="game or game/variant to record (repeatable)")
    args = parser.parse_args(argv)
    try:
        reports = capture_all(load_corpus_config(args.config), args.out_dir, only=args.only)
    except GameQAError as err:
        print(f"error: {err}")
        return 2
    kept = sum(r.accepted for r in reports)
    print(f"{kept} of {len(reports)} new captures kept")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
