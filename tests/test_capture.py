"""Gameplay capture: the frozen / duplicated frame detector, recipe parsing, and one real Xvfb capture."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from gameqa.data.capture import capture_source, check_frames
from gameqa.data.games import CaptureSettings, GameRecipe, load_corpus_config, parse_game
from gameqa.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def _moving_frame(index: int, width: int = 96, height: int = 64) -> np.ndarray:
    """A textured frame that scrolls by 3 pixels per index (every frame differs from the last)."""
    ys, xs = np.mgrid[0:height, 0:width]
    pattern = ((xs + 3 * index) * 7 + ys * 13) % 256
    return np.stack([pattern, (pattern * 3) % 256, 255 - pattern], axis=-1).astype(np.uint8)


def _write_clip(path: Path, frames: list[np.ndarray], fps: int = 30) -> Path:
    """Encode RGB frames losslessly (FFV1) so that repeated frames stay bit-identical."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=fps)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "bgr0"
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24").reformat(format="bgr0")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_moving_clip_passes(tmp_path):
    clip = _write_clip(tmp_path / "moving.mkv", [_moving_frame(i) for i in range(60)])
    check = check_frames(clip, fps=30)
    assert check.accepted, check.reason
    assert check.frames == 60
    assert check.duplicate_share == 0.0
    assert check.longest_frozen_s == 0.0
    assert abs(check.measured_fps - 30) < 0.5


def test_frozen_segment_is_rejected(tmp_path):
    # 20 moving frames, then the picture stays still for 40 frames (1.33 s), then moves again.
    indices = list(range(20)) + [20] * 40 + list(range(21, 41))
    clip = _write_clip(tmp_path / "frozen.mkv", [_moving_frame(i) for i in indices])
    check = check_frames(clip, fps=30)
    assert not check.accepted
    assert check.longest_frozen_s == pytest.approx(39 / 30, abs=1e-3)
    assert check.duplicate_share == pytest.approx(39 / 79, abs=1e-3)
    assert "frozen" in check.reason and "duplicated" in check.reason


def test_half_rate_game_is_rejected_by_share_not_by_run(tmp_path):
    # A game rendering at 15 fps into a 30 fps capture: every frame shown twice, no long freeze.
    clip = _write_clip(tmp_path / "half.mkv", [_moving_frame(i // 2) for i in range(60)])
    strict = check_frames(clip, fps=30, settings=CaptureSettings(max_duplicate_share=0.2, max_frozen_s=1.0))
    assert not strict.accepted and strict.duplicate_share == pytest.approx(30 / 59, abs=1e-3)
    assert strict.longest_frozen_s == pytest.approx(1 / 30, abs=1e-3)
    lenient = check_frames(clip, fps=30, settings=CaptureSettings(max_duplicate_share=0.6, max_frozen_s=1.0))
    assert lenient.accepted, lenient.reason


def test_blank_clip_is_rejected(tmp_path):
    black = np.zeros((64, 96, 3), np.uint8)
    frames = [black.copy() for _ in range(30)]
    for index, frame in enumerate(frames):  # tiny changes: not duplicates, but still a blank screen
        frame[0, index % 96, 0] = 1
    check = check_frames(_write_clip(tmp_path / "black.mkv", frames), fps=30)
    assert not check.accepted and "blank" in check.reason


def test_games_config_parses_and_names_variants():
    config = load_corpus_config(REPO / "configs" / "corpus" / "games.toml")
    assert len(config.games) >= 4
    assert sum(config.game(g.name).resolved(v).segments for g in config.games for v in g.variants) >= 100
    run = config.game("pingus").resolved("desert1")
    assert run.command[0] == "/usr/games/pingus" and run.command[-1].endswith("desert1.pingus")
    assert run.steps[0].kind == "click"


def test_candidate_games_share_the_capture_settings_and_stay_out_of_the_corpus():
    corpus = load_corpus_config(REPO / "configs" / "corpus" / "games.toml")
    candidates = load_corpus_config(REPO / "configs" / "corpus" / "candidates.toml")
    assert candidates.capture == corpus.capture
    assert not {g.name for g in candidates.games} & {g.name for g in corpus.games}
    run = candidates.game("chromium-bsu").resolved("level3")
    assert "screenWidth 1280" in run.files[".chromium-bsu"] and run.steps[0].value == "Down Right Right Up"
    # each warmux map is its own config file; teeworlds picks its map from the variant's environment
    maps = [candidates.game("warmux").resolved(v.name).files[".config/wormux/config.xml"]
            for v in candidates.game("warmux").variants]
    assert [f"<map>{v.name}</map>" in m for v, m in zip(candidates.game("warmux").variants, maps)] == [True] * 5
    tee = candidates.game("teeworlds").resolved("dm7-night")
    assert tee.env["TW_MAP"] == "dm7" and "cl_showhud 0" in tee.command[-1]
    hw = candidates.game("hedgewars").resolved("cheese-map")  # the engine driver is a file written into the home
    assert hw.env["HW_MAP"] == "Cheese" and "hwengine" in hw.files[".hwfront.py"]
    compile(hw.files[".hwfront.py"], ".hwfront.py", "exec")
    # Freedoom: no input; each variant's warm-up reaches one demo of its IWAD's title loop, in the loop's order
    doom = [candidates.game("freedoom").resolved(v.name) for v in candidates.game("freedoom").variants]
    assert {r.command[0] for r in doom} == {"/usr/games/dsda-doom"} and not any(r.steps for r in doom)
    for wad in ("freedoom1.wad", "freedoom2.wad"):
        warmups = [r.warmup_s for r in doom if r.command[-1].endswith(wad) and r.command[-2] == "-iwad"]
        assert len(warmups) >= 2 and warmups == sorted(warmups), (wad, warmups)


def test_bad_recipe_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown step"):
        parse_game("broken", {"command": ["true"], "steps": [{"press": "x"}]}, "games.toml")
    with pytest.raises(ConfigError, match="command"):
        parse_game("broken", {"warmup_s": 3}, "games.toml")


# A tiny "game": a Tk window filling the screen whose colour stripes scroll at 60 Hz.
_SCROLLER = """
import tkinter as tk
root = tk.Tk(); root.geometry('320x240+0+0'); root.overrideredirect(True)
canvas = tk.Canvas(root, width=320, height=240, highlightthickness=0); canvas.pack()
bars = [canvas.create_rectangle(i * 20, 0, i * 20 + 10, 240, fill='#%02x%02x80' % (i * 12, 255 - i * 12), width=0)
        for i in range(17)]
def tick():
    for bar in bars:
        canvas.move(bar, 3, 0)
        if canvas.coords(bar)[0] >= 320:
            canvas.move(bar, -340, 0)
    root.after(16, tick)
tick(); root.mainloop()
"""


def _tk_works() -> bool:
    return subprocess.run([sys.executable, "-c", "import tkinter"], capture_output=True).returncode == 0


@pytest.mark.skipif(shutil.which("Xvfb") is None, reason="Xvfb is not installed (apt-get install xvfb)")
@pytest.mark.skipif(not _tk_works(), reason="tkinter is not available to draw the test window")
def test_real_capture_under_xvfb(tmp_path):
    recipe = GameRecipe(name="scroller", command=(sys.executable, "-c", _SCROLLER), warmup_s=1.5)
    out = tmp_path / "scroller.mkv"
    settings = CaptureSettings(max_duplicate_share=0.5, max_frozen_s=0.5, min_fps_ratio=0.8)
    report = capture_source(recipe, None, out, seconds=2.0, fps=30, size=(320, 240), settings=settings)
    assert report.accepted, report.reason
    assert report.path == str(out) and out.exists()
    assert not list(tmp_path.glob(".*partial*"))
    with av.open(str(out)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 60 and frames[0].shape == (240, 320, 3)
    assert frames[0].std() > 10  # the stripes were captured, not a black screen
    assert not np.array_equal(frames[0], frames[-1])


def _children(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(shutil.which("Xvfb") is None, reason="Xvfb is not installed (apt-get install xvfb)")
@pytest.mark.skipif(not _tk_works(), reason="tkinter is not available to draw the test window")
def test_a_capture_killed_with_sigterm_stops_its_display_and_game(tmp_path):
    """`kill` (SIGTERM) on `gameqa corpus capture` once left Xvfb and the game running, each in its own session;
    now the command ends as Ctrl-C does (exit 143), stopping both, with no partial source left."""
    import json
    import signal
    import time

    games = tmp_path / "games.toml"
    games.write_text("[capture]\nfps = 30\nwidth = 320\nheight = 240\nseconds = 30\n\n[games.scroller]\n"
                     f"command = {json.dumps([sys.executable, '-c', _SCROLLER])}\nwarmup_s = 1\nsegments = 1\n")
    proc = subprocess.Popen([sys.executable, "-m", "gameqa.cli", "corpus", "capture", "--games", str(games),
                             "--root", str(tmp_path / "corpus")], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    started: list[int] = []
    while time.monotonic() < deadline and len(started) < 2:  # Xvfb, then the game
        time.sleep(0.2)
        started = _children(proc.pid)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    assert len(started) >= 2, "Xvfb and the game did not start"
    time.sleep(2.0)  # into the recording
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    time.sleep(0.5)
    alive = [pid for pid in started if Path(f"/proc/{pid}").exists()
             and Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"]
    for pid in alive:  # do not leave them behind if the test fails
        os.killpg(pid, signal.SIGKILL)
    assert alive == [], f"left running after SIGTERM: {alive}"
    assert not list((tmp_path / "corpus").rglob("*.mkv")) and not list((tmp_path / "corpus").rglob(".*partial*"))


@pytest.mark.skipif(shutil.which("Xvfb") is None, reason="Xvfb is not installed (apt-get install xvfb)")
def test_game_that_dies_gives_a_clear_error(tmp_path):
    from gameqa.data.capture import GameStartError

    recipe = GameRecipe(name="crasher", command=(sys.executable, "-c", "print('no level found'); raise SystemExit(3)"),
                        warmup_s=2)
    with pytest.raises(GameStartError, match=r"crasher: \[default\] exited with code 3 during warm-up: no level found"):
        capture_source(recipe, None, tmp_path / "x.mkv", seconds=1.0, size=(320, 240))
    assert not (tmp_path / "x.mkv").exists()
    missing = GameRecipe(name="ghost", command=("/usr/games/no-such-game",))
    with pytest.raises(GameStartError, match="command not found"):
        capture_source(missing, None, tmp_path / "y.mkv", seconds=1.0, size=(320, 240))


def test_unrecorded_variants_names_levels_with_no_source(tmp_path):
    """A variant whose every segment was rejected and that has no source on disk is named with its worst reason;
    one with a kept segment (now or from an earlier run) is not."""
    from gameqa.data.capture import CaptureReport, unrecorded_variants

    def report(variant, segment, share, accepted):
        reason = "ok" if accepted else f"{share:.0%} duplicated frames > 20%"
        return CaptureReport("g", variant, segment, None, 240, 30.0, share, 0.1, accepted, reason)

    (tmp_path / "g--kept--00.mkv").write_bytes(b"x")
    (tmp_path / "g--earlier--00.mkv").write_bytes(b"x")
    reports = [report("kept", 0, 0.01, True), report("kept", 1, 0.4, False), report("earlier", 1, 0.5, False),
               report("slow", 0, 0.31, False), report("slow", 1, 0.54, False), report("slow", 2, 0.22, False)]
    assert unrecorded_variants(reports, tmp_path) == {"g/slow": "54% duplicated frames > 20%"}
    assert unrecorded_variants([], tmp_path) == {}


@pytest.mark.skipif(shutil.which("Xvfb") is None, reason="Xvfb is not installed (apt-get install xvfb)")
@pytest.mark.skipif(not _tk_works(), reason="tkinter is not available to draw the test window")
def test_corpus_rebuild_goes_from_nothing_to_a_manifest_then_adds_the_plus_cache(tmp_path, need_ffmpeg):
    """`gameqa corpus rebuild`, the one command that remakes the corpus on a fresh machine: record (the Tk
    scroller as the game), encode the ladder, label with VMAF, write the manifest and its plot, time each stage;
    clips that fail are named at the end (exit 1) and the rest is built. Run again with --plus, it keeps the
    corpus as it is and adds the leave-one-game-out training cache, though the same clips fail again."""
    import csv
    import json

    games = tmp_path / "games.toml"
    games.write_text("[capture]\nfps = 30\nwidth = 320\nheight = 240\nseconds = 2\nmax_duplicate_share = 0.5\n"
                     "min_fps_ratio = 0.8\n\n[games.scroller]\n"
                     f"command = {json.dumps([sys.executable, '-c', _SCROLLER])}\nwarmup_s = 1\nsegments = 1\n")
    ladder = tmp_path / "ladder.toml"
    # every source gets both codecs; the second's clips fail (x264 has no such preset), the first's are built
    ladder.write_text('seconds = 1.0\ngop_seconds = 1.0\ncodecs_per_source = 2\n\n[[codec]]\nname = "h264"\n'
                      'encoder = "libx264"\nargs = ["-preset", "veryfast"]\n\n[[codec]]\nname = "broken"\n'
                      'encoder = "libx264"\nargs = ["-preset", "no-such-preset"]\n\n'
                      "[[rung]]\nheight = 240\nkbps = 400\n\n[[rung]]\nheight = 120\nkbps = 60\n")
    root, manifest = tmp_path / "corpus", tmp_path / "corpus.csv"
    cmd = [sys.executable, "-m", "gameqa.cli", "corpus", "rebuild", "--games", str(games), "--ladder", str(ladder),
           "--root", str(root), "--manifest", str(manifest)]
    env = dict(os.environ, COLUMNS="200")
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert first.returncode == 1, first.stdout[-3000:] + first.stderr[-3000:]
    assert len(re.findall(r"^  \S+\.(mkv|mp4) \[broken_\d+p", first.stderr, re.M)) == 6, first.stderr[-3000:]
    for stage in ("capture", "corpus build"):
        assert re.search(rf"== \d\d:\d\d {stage}: \d+\.\d min", first.stdout), first.stdout[-3000:]
    rows = list(csv.DictReader(manifest.read_text().splitlines()))
    games_seen = {r["game"] for r in rows}
    assert "scroller" in games_seen and {r["codec"] for r in rows} == {"h264"}
    mine = [r for r in rows if r["game"] == "scroller"]
    assert sorted(int(r["height"]) for r in mine) == [120, 240]
    low, high = sorted(mine, key=lambda r: int(r["height"]))
    assert 0 < float(low["vmaf"]) < float(high["vmaf"]) <= 100  # real VMAF labels, the smaller rung lower
    assert manifest.with_suffix(".png").stat().st_size > 0 and (root / "manifests" / "corpus.csv").is_file()
    clips = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.suffix in (".mkv", ".mp4")}
    # again with --plus: the corpus is kept as it is; the candidate game, soft, JPEG and synthetic contents are added
    candidates = tmp_path / "candidates.toml"
    candidates.write_text(games.read_text().replace("[games.scroller]", "[games.scroller2]"))
    again = subprocess.run(cmd + ["--plus", "--candidates", str(candidates), "--synth-scenes", "1"],
                           capture_output=True, text=True, timeout=600, env=env)
    # the same six clips fail again, and every stage after them still runs
    assert again.returncode == 1, again.stdout[-3000:] + again.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.suffix in (".mkv", ".mp4")} == clips
    assert list(csv.DictReader(manifest.read_text().splitlines())) == rows
    for stage in ("capture of the candidate games", "candidate games' build",
                  "soft, JPEG-blocked and synthetic contents"):
        assert re.search(rf"== \d\d:\d\d {stage}: \d+\.\d min", again.stdout), again.stdout[-3000:]
    merged = list(csv.DictReader((tmp_path / "corpus-plus-sj" / "manifests" / "corpus.csv").read_text().splitlines()))
    assert {r["game"] for r in merged} == games_seen | {"scroller2", "synthetic"}
    assert {r["group"] for r in merged} >= {"game", "natural", "soft", "synth"} and len(merged) > len(rows) + 2
    assert {r["content"] for r in merged if r["group"] == "synth"} == {"synthetic--scene-000"}


def test_a_rebuild_stage_that_fails_says_it_stopped_not_how_long_it_took(tmp_path):
    """The rebuild's log times each stage; a stage that ends in an error is logged as stopped, not as done."""
    cmd = [sys.executable, "-m", "gameqa.cli", "corpus", "rebuild", "--games", str(tmp_path / "none.toml"),
           "--root", str(tmp_path / "corpus")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=dict(os.environ, COLUMNS="200"))
    assert proc.returncode == 1 and "none.toml: cannot read" in proc.stderr, proc.stdout + proc.stderr
    assert re.search(r"^== \d\d:\d\d capture: stopped after \d+\.\d min$", proc.stdout, re.M), proc.stdout
    assert not re.search(r"capture: \d+\.\d min", proc.stdout) and not (tmp_path / "corpus").exists()


def test_a_rebuild_missing_its_tools_stops_before_it_starts(tmp_path):
    """With no Xvfb or xdotool on PATH and GAMEQA_FFMPEG naming a program that is no ffmpeg, `gameqa corpus
    rebuild` stops at once: one line naming each missing tool, exit 1, nothing written (not a failed clip per clip
    after an hour of captures). Once every source is recorded, the capture tools are no longer asked for."""
    import json

    from gameqa.data.capture import source_name
    from gameqa.data.games import load_corpus_config

    games = tmp_path / "games.toml"
    games.write_text("[capture]\nfps = 30\nwidth = 320\nheight = 240\nseconds = 2\n\n[games.scroller]\n"
                     f"command = {json.dumps([sys.executable, '-c', _SCROLLER])}\nwarmup_s = 1\nsegments = 1\n")
    root, manifest = tmp_path / "corpus", tmp_path / "corpus.csv"
    (tmp_path / "bin").mkdir()
    env = dict(os.environ, PATH=str(tmp_path / "bin"), GAMEQA_FFMPEG=shutil.which("true") or "/bin/true",
               COLUMNS="500")
    cmd = [sys.executable, "-m", "gameqa.cli", "corpus", "rebuild", "--games", str(games), "--root", str(root),
           "--manifest", str(manifest)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stdout + proc.stderr
    assert lines[0].startswith("error: corpus rebuild needs ") and lines[0].endswith("nothing was started")
    for tool in ("libx264", "libsvtav1", "libvmaf", "Xvfb (apt-get install xvfb)", "xdotool"):
        assert tool in lines[0], lines[0]
    assert not root.exists() and not manifest.exists() and "capture" not in proc.stdout

    run = load_corpus_config(games).games[0].resolved(None)   # its one source recorded: only the build tools
    (root / "sources").mkdir(parents=True)
    (root / "sources" / source_name(run.game, run.variant, 0)).write_bytes(b"")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 1 and "libvmaf" in proc.stderr, proc.stdout + proc.stderr
    assert "Xvfb" not in proc.stderr and "xdotool" not in proc.stderr and not manifest.exists()
