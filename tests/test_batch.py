"""Batch scoring (gameqa.cluster.batch): local and Ray engines give the same rows, output streams to
JSONL or Parquet, and an interrupted run resumes without scoring a finished file twice."""
from __future__ import annotations

import importlib.util

import os
import signal
import time
from pathlib import Path

import pytest
from rich.console import Console

from gameqa.models.registry import DEFAULT_MODEL
from gameqa.bench.batch import make_clips
from gameqa.cluster.batch import batch_score, read_rows
from gameqa.errors import ConfigError
from gameqa.scoring import Scorer


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    """Six real H.264 clips (192x108, 1 s) and one file that is not a video."""
    folder = tmp_path_factory.mktemp("batch") / "clips"
    make_clips(folder, 6, size=(192, 108), seconds=1.0, fps=10, seed=5)
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"junk" * 100)
    return folder


def by_path(rows):
    return {r["path"]: r for r in rows}


def test_local_rows_match_the_scorer_and_a_rerun_scores_nothing(clip_dir, tmp_path):
    out = tmp_path / "scores.jsonl"
    report = batch_score([str(clip_dir)], out=str(out))
    assert (report.total, report.scored, report.failed, report.skipped) == (7, 6, 1, 0)
    rows = by_path(read_rows(str(out)))
    scorer = Scorer(DEFAULT_MODEL)  # the batch's default model
    for clip in sorted(clip_dir.glob("clip_*.mp4")):
        expected = scorer.score(clip)
        row = rows[str(clip)]
        assert row["overall"] == expected.overall and row["frame_scores"] == expected.frame_scores
        assert row["model"] == DEFAULT_MODEL and row["sample"] == "fps:2" and row["error"] is None
    broken = rows[str(clip_dir / "broken.mp4")]
    assert broken["overall"] is None and "broken.mp4" in broken["error"]
    assert len(set(r["overall"] for r in rows.values() if r["overall"] is not None)) == 6

    lines = out.read_text().splitlines()
    again = batch_score([str(clip_dir)], out=str(out))
    assert (again.scored, again.failed, again.skipped) == (0, 0, 7)
    assert out.read_text().splitlines() == lines
    retry = batch_score([str(clip_dir)], out=str(out), retry_failed=True)
    assert (retry.scored, retry.failed, retry.skipped) == (0, 1, 6)


def test_interrupted_run_resumes_without_rescoring(clip_dir, tmp_path):
    out = tmp_path / "scores.jsonl"
    seen = []

    def stop_after_three(row, done, todo):
        seen.append(row["path"])
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        batch_score([str(clip_dir)], out=str(out), chunk_size=1, on_row=stop_after_three)
    assert len(read_rows(str(out))) == 3
    # a writer killed mid-line leaves a torn last line: it is cut off and that file scored again
    with open(out, "a") as fh:
        fh.write('{"path": "/half/a/row", "overa')
    resumed = []
    report = batch_score([str(clip_dir)], out=str(out), on_row=lambda row, d, t: resumed.append(row["path"]))
    assert report.skipped == 3 and report.scored + report.failed == 4
    assert not set(resumed) & set(seen)
    rows = read_rows(str(out))
    assert len(rows) == 7 and len({r["path"] for r in rows}) == 7
    fresh = by_path(read_rows(str(tmp_path / "fresh.jsonl")) if batch_score(
        [str(clip_dir)], out=str(tmp_path / "fresh.jsonl")) else [])
    assert {p: r["overall"] for p, r in by_path(rows).items()} == {p: r["overall"] for p, r in fresh.items()}


def test_parquet_output_and_its_journal(clip_dir, tmp_path):
    pytest.importorskip("pyarrow")
    out = tmp_path / "scores.parquet"
    report = batch_score([str(clip_dir / "clip_00000.mp4"), str(clip_dir / "clip_00001.mp4")], out=str(out))
    assert report.scored == 2 and out.exists() and not Path(str(out) + ".journal.jsonl").exists()
    # a run killed outright leaves its journal: the next run keeps those rows and skips those files
    journal = Path(str(out) + ".journal.jsonl")
    side = tmp_path / "side.jsonl"
    batch_score([str(clip_dir / "clip_00002.mp4")], out=str(side))
    journal.write_text(side.read_text())
    report = batch_score([str(clip_dir)], out=str(out), workers=2, chunk_size=2)
    assert (report.skipped, report.scored, report.failed) == (3, 3, 1)
    rows = read_rows(str(out))
    assert len(rows) == 7 and not journal.exists()
    stamp = out.stat().st_mtime_ns  # a rerun with nothing new leaves the Parquet file as it is
    assert batch_score([str(clip_dir)], out=str(out)).skipped == 7 and out.stat().st_mtime_ns == stamp
    assert not journal.exists()
    batch_score([str(tmp_path / "nothing")], out=str(tmp_path / "none.parquet"))
    assert not (tmp_path / "none.parquet").exists()
    local = by_path(read_rows(str(side)))
    assert by_path(rows)[str(clip_dir / "clip_00002.mp4")]["overall"] == local[str(clip_dir / "clip_00002.mp4")]["overall"]
    assert all(isinstance(r["frame_scores"], list) for r in rows if r["error"] is None)


def test_manifest_and_bad_arguments(clip_dir, tmp_path):
    import shutil

    (tmp_path / "sub").mkdir()
    shutil.copy(clip_dir / "clip_00003.mp4", tmp_path / "sub" / "c3.mp4")
    manifest = tmp_path / "set.csv"
    manifest.write_text("path,mos\n" + "".join(f"{clip_dir}/clip_0000{i}.mp4,3\n" for i in range(2))
                        + "sub/c3.mp4,4\n")
    report = batch_score([str(manifest)], out=str(tmp_path / "m.jsonl"))
    assert report.total == 3 and report.scored == 3
    assert str(tmp_path / "sub" / "c3.mp4") in by_path(read_rows(str(tmp_path / "m.jsonl")))
    with pytest.raises(ConfigError, match=".jsonl or .parquet"):
        batch_score([str(clip_dir)], out=str(tmp_path / "x.csv"))
    with pytest.raises(ConfigError, match="engine must be"):
        batch_score([str(clip_dir)], out=str(tmp_path / "x.jsonl"), engine="spark")
    import socket

    with socket.socket() as unused:  # a port nothing listens on: Ray itself retried it for many minutes
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    if importlib.util.find_spec("ray") is not None:
        with pytest.raises(ConfigError, match=rf"^127\.0\.0\.1:{port}: no Ray cluster answers there \("):
            batch_score([str(clip_dir)], out=str(tmp_path / "r.jsonl"), engine="ray", address=f"127.0.0.1:{port}")
        assert not (tmp_path / "r.jsonl").exists()
    report = batch_score([str(tmp_path / "missing")], out=str(tmp_path / "y.jsonl"))
    assert report.total == 0 and "no such file" in report.input_errors[0]
    assert not (tmp_path / "y.jsonl").exists()  # nothing to score: no empty output file either


def test_onnx_model_in_a_process_pool(clip_dir, tmp_path):
    """A model registered at run time reaches the worker processes (by its folder)."""
    import onnxgen
    from gameqa.models.registry import register_model_dir

    name = register_model_dir(onnxgen.write_mean_model(tmp_path / "m", name="batch-mean")).name
    one = batch_score([str(clip_dir)], model=name, out=str(tmp_path / "one.jsonl"))
    two = batch_score([str(clip_dir)], model=name, out=str(tmp_path / "two.jsonl"), workers=2, chunk_size=1)
    assert one.scored == two.scored == 6
    a, b = by_path(read_rows(str(tmp_path / "one.jsonl"))), by_path(read_rows(str(tmp_path / "two.jsonl")))
    assert {p: r["overall"] for p, r in a.items()} == {p: r["overall"] for p, r in b.items()}
    assert all(r["model"] == "batch-mean" for r in b.values())


def same_rows(a: list[dict], b: list[dict]) -> None:
    """The same files in the same order, with exactly the same scores (timings may differ)."""
    assert [r["path"] for r in a] == [r["path"] for r in b]
    for x, y in zip(a, b):
        for key in ("overall", "frame_scores", "frame_indices", "timestamps", "model", "model_version", "error"):
            assert x[key] == y[key], (x["path"], key)


def test_ray_engine_from_the_cli_gives_the_local_rows_in_order(clip_dir, tmp_path):
    """`gameqa batch --engine ray` starts a local Ray, scores with one actor per CPU, shuts Ray down."""
    ray = pytest.importorskip("ray")
    from typer.testing import CliRunner

    from gameqa.cli import app

    local = tmp_path / "local.jsonl"
    batch_score([str(clip_dir)], out=str(local))
    out = tmp_path / "ray.jsonl"
    result = CliRunner().invoke(app, ["batch", str(clip_dir), "-o", str(out), "--engine", "ray", "--workers", "2",
                                      "--chunk-size", "2"], env={"COLUMNS": "200"})
    assert result.exit_code == 1, result.output  # the broken file fails; the others are scored
    assert "6 scored, 1 failed" in result.output and "engine ray" in result.output
    assert not ray.is_initialized()
    same_rows(read_rows(str(out)), read_rows(str(local)))
    again = batch_score([str(clip_dir)], out=str(out), engine="ray", workers=2)
    assert again.skipped == 7 and again.scored == 0


@pytest.fixture(scope="module")
def ray_here():
    """A Ray started by this test process (its workers are our own descendants)."""
    ray = pytest.importorskip("ray")
    from gameqa.cluster.batch import RAY_INIT_OPTIONS

    ray.init(num_cpus=2, **RAY_INIT_OPTIONS)
    yield ray
    ray.shutdown()


def _our_actor_pids() -> list[int]:
    """Process ids of ChunkScorer actors started under this process."""
    parent = {}
    titles = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                titles[int(entry.name)] = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            except (OSError, IndexError, ValueError):
                continue

    def ours(pid: int) -> bool:
        while pid > 1:
            pid = parent.get(pid, 0)
            if pid == os.getpid():
                return True
        return False

    return [pid for pid, title in titles.items() if title.startswith("ray::ChunkScorer") and ours(pid)]


def test_ray_actors_killed_mid_run_lose_no_file(clip_dir, tmp_path, ray_here):
    """Kill every actor after the first row: the chunks they held are scored again on fresh actors."""
    local = tmp_path / "local.jsonl"
    batch_score([str(clip_dir)], out=str(local))
    killed = []

    def kill_the_actors(row, done, todo):
        if done == 1:
            deadline = time.monotonic() + 60  # on a loaded machine the second actor may still be starting
            while len(_our_actor_pids()) < 2 and time.monotonic() < deadline:
                time.sleep(0.2)
            for pid in _our_actor_pids():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    out = tmp_path / "ray.jsonl"
    report = batch_score([str(clip_dir)], out=str(out), engine="ray", workers=2, chunk_size=1, on_row=kill_the_actors)
    assert len(killed) == 2
    assert (report.scored, report.failed) == (6, 1) and "broken.mp4" in report.failures[0]
    same_rows(read_rows(str(out)), read_rows(str(local)))
    assert ray_here.is_initialized()  # a Ray we did not start is left running, without our actors
    deadline = time.monotonic() + 20
    while _our_actor_pids() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _our_actor_pids()


def test_registered_onnx_model_on_ray(tmp_path, clip_dir, ray_here):
    """A model registered at run time reaches the actors by its folder; scores equal the local ones."""
    import onnxgen
    from gameqa.models.registry import register_model_dir

    name = register_model_dir(onnxgen.write_mean_model(tmp_path / "m", name="ray-mean")).name
    batch_score([str(clip_dir)], model=name, out=str(tmp_path / "local.jsonl"))
    report = batch_score([str(clip_dir)], model=name, out=str(tmp_path / "ray.jsonl"), engine="ray", chunk_size=3)
    assert report.scored == 6 and report.engine_start_s > 0
    same_rows(read_rows(str(tmp_path / "ray.jsonl")), read_rows(str(tmp_path / "local.jsonl")))
    assert all(r["model"] == "ray-mean" for r in read_rows(str(tmp_path / "ray.jsonl")))


def test_gameplay_clips_and_the_bench_table(tmp_path):
    """Short clips cut from the bundled capture: real H.264 at the asked size, each its own content."""
    from gameqa.bench.batch import bench_batch, make_gameplay_clips, print_batch_table
    from gameqa.media.video import probe_video

    clips = make_gameplay_clips(tmp_path / "clips", 3, size=(320, 180), seconds=1.0, seed=3)
    infos = [probe_video(c) for c in clips]
    assert all((i.codec, i.width, i.height) == ("h264", 320, 180) and abs(i.duration - 1.0) < 0.1 for i in infos)
    assert len({c.read_bytes() for c in clips}) == 3
    mtimes = [c.stat().st_mtime_ns for c in clips]
    assert make_gameplay_clips(tmp_path / "clips", 3, size=(320, 180), seconds=1.0, seed=3) == clips
    assert [c.stat().st_mtime_ns for c in clips] == mtimes  # kept, not made again

    result = bench_batch(clips=3, workers=2, size=(320, 180), seconds=1.0, folder=str(tmp_path / "clips"),
                         engines=("local-1", "local"))
    assert [r["engine"] for r in result["rows"]] == ["local-1", "local"]
    assert all(r["scored"] == 3 and r["identical"] and r["same_order"] for r in result["rows"])
    console = Console(record=True, width=160)
    print_batch_table(result, console=console)
    text = console.export_text()
    assert "3 gameplay clips 320x180" in text and "x plain" in text and "yes" in text


def test_an_output_file_of_another_program_is_refused_and_kept(clip_dir, tmp_path):
    clip = str(clip_dir / "clip_00000.mp4")
    for text in ("my important notes\n", "my notes, no newline", '{"score": 3}\n', "5\n"):
        notes = tmp_path / "notes.jsonl"
        notes.write_text(text)
        with pytest.raises(ConfigError, match="line 1: not a row of scores"):
            batch_score([clip], out=str(notes))
        assert notes.read_text() == text
    torn = tmp_path / "torn.jsonl"  # the start of a row, cut by a killed writer: cut off, and the file scored
    torn.write_text('{"path": "/x", "ove')
    assert batch_score([clip], out=str(torn)).scored == 1 and len(read_rows(str(torn))) == 1
    with pytest.raises(ConfigError, match="cannot make its folder"):
        batch_score([clip], out=clip + "/x.jsonl")
    with pytest.raises(ConfigError, match=r"^/proc/scores\.jsonl: cannot write \("):  # was a FileNotFoundError
        batch_score([clip], out="/proc/scores.jsonl")
    (tmp_path / "folder.jsonl").mkdir()
    with pytest.raises(ConfigError, match="is a folder"):
        batch_score([clip], out=str(tmp_path / "folder.jsonl"))
    with pytest.raises(ConfigError, match="'psnr' is full-reference"):
        batch_score([clip], out=str(tmp_path / "fr.jsonl"), model="psnr")
    assert not (tmp_path / "fr.jsonl").exists()
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"path": 5}\n')
    report = batch_score([str(manifest)], out=str(tmp_path / "o.jsonl"))
    assert report.total == 0 and "line 1: 'path' must be a string" in report.input_errors[0]


def test_a_rerun_with_other_pooling_or_per_frame_scores_again(clip_dir, tmp_path):
    clip = str(clip_dir / "clip_00001.mp4")
    out = str(tmp_path / "o.jsonl")
    assert batch_score([clip], out=out, per_frame=False).scored == 1
    assert batch_score([clip], out=out, per_frame=False).skipped == 1
    assert batch_score([clip], out=out).scored == 1  # per-frame scores asked for: the first row has none
    assert batch_score([clip], out=out, per_frame=False).skipped == 1  # a row with them answers a run without
    worst = batch_score([clip], out=out, pooling="worst:10")
    assert worst.scored == 1
    rows = read_rows(out)
    assert [r["pooling"] for r in rows] == ["mean", "mean", "worst:10"]
    assert rows[2]["overall"] <= rows[1]["overall"]


def test_a_rerun_reports_the_files_that_failed_before(clip_dir, tmp_path):
    from typer.testing import CliRunner

    from gameqa.cli import app

    out = tmp_path / "o.jsonl"
    runner = CliRunner()
    bad = runner.invoke(app, ["batch", str(clip_dir), "-o", str(out), "--engine", "spark"])
    assert bad.exit_code == 2 and bad.output == "error: engine must be one of local, ray, not 'spark'\n"  # one line
    first = runner.invoke(app, ["batch", str(clip_dir), "-o", str(out)])
    assert first.exit_code == 1 and "broken.mp4" in first.output
    again = runner.invoke(app, ["batch", str(clip_dir), "-o", str(out)])
    assert again.exit_code == 1 and "0 scored, 0 failed, 7 already in" in again.output
    assert "1 of the files already in" in again.output and "broken.mp4" in again.output
    # once a retry scores it, the file's earlier failure is history: a rerun is clean
    (clip_dir / "broken.mp4").rename(clip_dir / "broken.bak")
    try:
        (clip_dir / "broken.mp4").write_bytes((clip_dir / "clip_00000.mp4").read_bytes())
        retried = runner.invoke(app, ["batch", str(clip_dir), "-o", str(out), "--retry-failed"])
        assert retried.exit_code == 0 and "1 scored, 0 failed, 6 already in" in retried.output, retried.output
        clean = runner.invoke(app, ["batch", str(clip_dir), "-o", str(out)])
        assert clean.exit_code == 0 and "failed in an earlier run" not in clean.output, clean.output
    finally:
        (clip_dir / "broken.bak").replace(clip_dir / "broken.mp4")


@pytest.fixture(scope="module")
def busy_clips(tmp_path_factory) -> Path:
    """Ten clips that keep a pool busy for a while (320x180, 2 s at 30 fps, every frame scored)."""
    folder = tmp_path_factory.mktemp("busy") / "clips"
    make_clips(folder, 10, size=(320, 180), seconds=2.0, fps=30, seed=2)
    return folder


@pytest.mark.parametrize("to_group, presses", [(True, 1), (False, 2)], ids=["terminal-ctrl-c", "driver-sigint-twice"])
def test_ctrl_c_stops_a_process_pool_without_hanging_or_worker_tracebacks(busy_clips, tmp_path, to_group, presses):
    """Ctrl-C in a terminal reaches the driver and every pool worker; a supervisor's SIGINT only the driver, maybe
    twice. Either way the driver stops the workers itself: no traceback from each, no worker left, no hang
    waiting for the chunks they hold (two SIGINTs to the driver used to hang it for good), and a rerun resumes."""
    import subprocess
    import sys

    out = tmp_path / "o.jsonl"
    command = [sys.executable, "-m", "gameqa.cli", "batch", str(busy_clips), "-o", str(out), "--workers", "2",
               "--chunk-size", "1", "--sample", "all"]

    def foreground_job():  # its own process group, Ctrl-C not ignored (as a shell's foreground job)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.setpgrp()

    process = subprocess.Popen(command, preexec_fn=foreground_job, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.monotonic() + 120
    while not (out.exists() and out.read_text().count("\n") >= 1) and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    for press in range(presses):
        if to_group:
            os.killpg(process.pid, signal.SIGINT)
        else:
            os.kill(process.pid, signal.SIGINT)
        time.sleep(0.5)
    try:
        _, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail("the batch did not stop within 60 s of Ctrl-C")
    assert process.returncode in ((130,) if presses == 1 else (130, -signal.SIGINT)), stderr
    assert "interrupted: finished rows are in" in stderr
    if presses == 1:
        assert "Traceback" not in stderr
    done = len(read_rows(str(out)))
    assert 1 <= done < 10
    assert subprocess.run(["pgrep", "-g", str(process.pid)], capture_output=True).stdout == b""
    if presses == 1:
        report = batch_score([str(busy_clips)], out=str(out), sample="all")
        assert report.skipped == done and report.scored == 10 - done


def test_bench_batch_json_is_strict_and_synthetic_clips_are_reused_only_for_the_same_settings(tmp_path):
    """Without the pool engine its ratios are NaN: the JSON says null. A clip folder made at one size is not
    taken for clips of another."""
    import json

    from typer.testing import CliRunner

    from gameqa.cli import app

    base = ["bench", "batch", "-m", "niqe", "-s", "uniform:1", "--clips", "2", "--synthetic", "--seconds", "0.3",
            "--engines", "local-1", "--clip-dir", str(tmp_path / "clips"), "--json"]
    done = CliRunner().invoke(app, base + ["--width", "64", "--height", "48"])
    assert done.exit_code == 0, done.output

    def no_constants(name):
        raise ValueError(f"not strict JSON: {name}")

    report = json.loads(done.stdout, parse_constant=no_constants)
    assert report["rows"][0]["x_pool"] is None
    done = CliRunner().invoke(app, base + ["--width", "96", "--height", "64"])
    assert done.exit_code == 0, done.output
    from gameqa.media.video import probe_video

    sizes = sorted({(probe_video(p).width, probe_video(p).height) for p in (tmp_path / "clips").rglob("*.mp4")})
    assert sizes == [(64, 48), (96, 64)] and len(list((tmp_path / "clips").rglob("*.mp4"))) == 4


@pytest.mark.parametrize("args, message", [
    (["bench", "batch", "--width", "63", "--synthetic"], "must be even"),
    (["bench", "batch", "--clips", "0"], "--clips"),
    (["bench", "service-load", "--clients", "0"], "--clients"),
    (["bench", "service-load", "--model", "no-such-model", "--seconds", "1"], "unknown model 'no-such-model'"),
    (["bench", "models", "niqe", "--clip-fps", "0"], "--clip-fps"),
    (["bench", "models", "niqe", "--clip-seconds", "0"], "--clip-seconds"),
])
def test_bench_options_out_of_range_fail_before_any_work(args, message):
    from typer.testing import CliRunner

    from gameqa.cli import app

    done = CliRunner().invoke(app, args)
    assert done.exit_code in (1, 2) and message in done.output and "Traceback" not in done.output, done.output


def test_a_benchmark_clip_that_cannot_be_made_leaves_no_file(tmp_path):
    from gameqa.bench.decode import make_bench_clip
    from gameqa.errors import MediaError

    with pytest.raises(MediaError):
        make_bench_clip(tmp_path / "zero.mp4", seconds=0)
    with pytest.raises(MediaError):
        make_bench_clip(tmp_path / "odd.mp4", seconds=1, preset="no-such-preset")
    assert list(tmp_path.iterdir()) == []
    clip = make_bench_clip(tmp_path / "ok.mp4", seconds=0.5, preset="ultrafast")
    assert [p.name for p in tmp_path.iterdir()] == ["ok.mp4"] and clip.stat().st_size > 0
