"""Batch scoring (gameqa.cluster.batch): local and Ray engines give the same rows, output streams to
JSONL or Parquet, and an interrupted run resumes without scoring a finished file twice."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

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
    scorer = Scorer("niqe")
    for clip in sorted(clip_dir.glob("clip_*.mp4")):
        expected = scorer.score(clip)
        row = rows[str(clip)]
        assert row["overall"] == expected.overall and row["frame_scores"] == expected.frame_scores
        assert row["model"] == "niqe" and row["sample"] == "fps:2" and row["error"] is None
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
    report = batch_score([str(tmp_path / "missing")], out=str(tmp_path / "y.jsonl"))
    assert report.total == 0 and "no such file" in report.input_errors[0]


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


def test_ray_engine_gives_identical_rows(clip_dir, tmp_path):
    pytest.importorskip("ray")
    local = tmp_path / "local.jsonl"
    batch_score([str(clip_dir)], out=str(local))
    out = tmp_path / "ray.jsonl"
    report = batch_score([str(clip_dir)], out=str(out), engine="ray", workers=2, chunk_size=2)
    assert (report.scored, report.failed) == (6, 1)
    ray_rows, local_rows = by_path(read_rows(str(out))), by_path(read_rows(str(local)))
    assert ray_rows.keys() == local_rows.keys()
    for path, row in local_rows.items():
        assert ray_rows[path]["overall"] == row["overall"] and ray_rows[path]["frame_scores"] == row["frame_scores"]
    again = batch_score([str(clip_dir)], out=str(out), engine="ray", workers=2)
    assert again.skipped == 7 and again.scored == 0
    assert json.loads(out.read_text().splitlines()[0])["model"] == "niqe"
