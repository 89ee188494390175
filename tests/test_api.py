"""The Python API: gameqa.api.load(model).score(path or numpy array) -> ScoreResult."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from gameqa.api import ARRAY_NAME, load
from gameqa.errors import GameQAError, MediaError
from gameqa.models.registry import register_model_dir
from gameqa.result import ScoreResult
from gameqa.scoring import Scorer

import clipgen
import onnxgen


@pytest.fixture(scope="module")
def niqe_clip(tmp_path_factory, need_ffmpeg):
    """192x108 H.264, 10 frames: big enough for NIQE's two 96x96 patches."""
    return clipgen.make_clip(tmp_path_factory.mktemp("api") / "c.mp4", size=(192, 108), fps=10, seconds=1.0)


@pytest.fixture(scope="module")
def mean_model(tmp_path_factory):
    return register_model_dir(onnxgen.write_mean_model(tmp_path_factory.mktemp("m") / "api-mean", name="api-mean")).name


def _textured(seed: int, size=(108, 192)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size[0], 0:size[1]]
    base = (127 + 90 * np.sin(xx * 0.1) * np.cos(yy * 0.13))[..., None].repeat(3, axis=2)
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


def test_file_scores_match_the_cli_scorer(niqe_clip):
    result = load("niqe").score(niqe_clip)
    reference = Scorer("niqe").score(niqe_clip)
    assert isinstance(result, ScoreResult)
    assert result.kind == "video" and result.model == "niqe" and result.model_version == reference.model_version
    assert result.overall == reference.overall
    assert result.frame_scores == reference.frame_scores
    assert result.frame_indices == [0, 5] and result.timestamps == [0.0, 0.5]


def test_image_array_scores_like_the_same_image_file(tmp_path):
    image = _textured(1)
    path = tmp_path / "shot.png"
    Image.fromarray(image).save(path)
    scorer = load("niqe")
    from_array = scorer.score(image)
    from_file = scorer.score(path)
    assert from_array.kind == from_file.kind == "image"
    assert from_array.path == ARRAY_NAME
    assert from_array.overall == pytest.approx(from_file.overall, abs=1e-9)


def test_frame_array_is_scored_frame_by_frame_with_timestamps():
    frames = np.stack([_textured(s) for s in range(5)])
    scorer = load("niqe", batch_size=2)
    seen = []
    result = scorer.score(frames, fps=10, on_batch=lambda f, s: seen.append(len(f)))
    assert result.kind == "video" and result.sample == "all"
    assert result.frame_indices == [0, 1, 2, 3, 4]
    assert result.timestamps == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    singles = [scorer.score(f).overall for f in frames]
    assert result.frame_scores == pytest.approx(singles, abs=1e-9)
    assert result.overall == pytest.approx(np.mean(singles))
    assert seen == [2, 2, 1]
    assert len(set(np.round(singles, 6))) == 5  # different pictures, different scores


def test_onnx_model_on_constant_frames_gives_the_known_score(mean_model):
    frames = np.full((3, 32, 48, 3), 51, dtype=np.uint8)  # mean 0.2 -> 1 + 4 * 0.2
    result = load(mean_model).score(frames)
    assert result.frame_scores == pytest.approx([1.8, 1.8, 1.8], abs=1e-5)
    assert result.model == mean_model and result.score_range == (1.0, 5.0)


def test_file_progress_callback_sees_every_sampled_frame(niqe_clip):
    counted = []
    result = load("niqe", sample="all").score(niqe_clip, on_batch=lambda f, s: counted.append((len(f), len(s))))
    assert sum(n for n, _ in counted) == len(result.frame_scores) == 10
    assert all(n == m for n, m in counted)


@pytest.mark.parametrize("array, problem", [
    (np.zeros((10, 10, 3), dtype=np.float32), "uint8"),
    (np.zeros((10, 10), dtype=np.uint8), "neither"),
    (np.zeros((2, 10, 10, 4), dtype=np.uint8), "neither"),
    (np.zeros((0, 10, 10, 3), dtype=np.uint8), "no frames"),
])
def test_bad_arrays_are_refused_with_one_line(array, problem):
    with pytest.raises(MediaError) as err:
        load("niqe").score(array)
    assert problem in str(err.value) and "\n" not in str(err.value)


def test_an_input_that_is_neither_a_path_nor_an_array_is_one_line():
    """A list of frames (or None) was a TypeError from os.fspath deep inside."""
    scorer = load("niqe")
    for source, ref, what in (([np.zeros((10, 10, 3), np.uint8)], None, "the input"), (None, None, "the input"),
                              ("clip.mp4", [1, 2], "the reference")):
        with pytest.raises(GameQAError, match=f"^{what} must be a file path or a numpy uint8 array, not "):
            scorer.score(source, ref=ref)


def test_a_frame_too_small_for_the_model_is_refused_naming_the_array():
    with pytest.raises(GameQAError) as err:
        load("eraque-student").score(np.zeros((3, 10, 2000, 3), dtype=np.uint8))
    assert str(err.value) == "<array>: frame 2000x10 is too small to score: each side needs at least 16 px"


def test_unknown_model_and_full_reference_without_ref():
    with pytest.raises(GameQAError, match="unknown model"):
        load("no-such-model")
    with pytest.raises(GameQAError, match="full-reference"):
        load("psnr").score(np.zeros((16, 16, 3), dtype=np.uint8))


def test_full_reference_arrays():
    a = _textured(2)
    b = np.clip(a.astype(int) + 8, 0, 255).astype(np.uint8)
    result = load("psnr").score(b, ref=a)
    assert result.kind == "image" and result.reference == "<ref array>"
    assert 25 < result.overall < 40  # about 20*log10(255/8) = 30 dB
    with pytest.raises(MediaError, match="differs"):
        load("psnr").score(b, ref=a[:50])


def test_usable_without_torch(niqe_clip):
    """torch cannot even be imported in this interpreter; the API still scores."""
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None   # any 'import torch' now raises ImportError
        from gameqa.api import load
        r = load("niqe").score({str(niqe_clip)!r})
        assert r.frame_scores and r.overall > 0
        print("ok", round(r.overall, 3))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("ok")


def test_prefetched_decoding_gives_the_same_result_as_sequential(niqe_clip):
    ahead = Scorer("niqe", sample="all", batch_size=3).score(niqe_clip)
    inline = Scorer("niqe", sample="all", batch_size=3, prefetch=False).score(niqe_clip)
    assert ahead.frame_indices == inline.frame_indices == list(range(10))
    assert ahead.frame_scores == inline.frame_scores
    assert ahead.overall == inline.overall


def test_prefetched_decoding_reports_a_broken_file_and_leaves_no_thread(tmp_path, niqe_clip):
    import threading

    broken = tmp_path / "cut.mp4"
    data = open(niqe_clip, "rb").read()
    broken.write_bytes(data[: len(data) // 3])
    before = {t.name for t in threading.enumerate()}
    with pytest.raises(MediaError) as err:
        Scorer("niqe", sample="all", batch_size=2).score(broken)
    assert str(broken) in str(err.value)
    assert "gameqa-decode" not in {t.name for t in threading.enumerate()} - before


def test_prefetch_stops_its_producer_when_the_consumer_stops_early():
    import threading

    from gameqa.scoring import _prefetched

    made = []

    def endless():
        n = 0
        while True:
            made.append(n)
            yield n
            n += 1

    ahead = _prefetched(endless(), depth=2)
    assert [next(ahead) for _ in range(3)] == [0, 1, 2]
    ahead.close()
    assert not [t for t in threading.enumerate() if t.name == "gameqa-decode"]
    assert len(made) <= 3 + 2 + 1  # taken, queued, and the one in hand


def test_an_array_at_a_frame_rate_that_is_no_number_is_refused():
    frames = np.zeros((2, 64, 64, 3), np.uint8)
    for fps in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(GameQAError, match="fps must be a positive finite number"):
            load("niqe").score(frames, fps=fps)


def test_results_record_the_canonical_policy_and_folders_take_every_known_picture_type(tmp_path):
    from gameqa.scoring import Scorer, collect_inputs

    assert Scorer("niqe", sample=" ALL ").sample == "all" and Scorer("niqe", sample="fps:1e3").sample == "fps:1000"
    picture = Image.fromarray(np.full((48, 64, 3), 128, np.uint8))
    for name in ("a.tiff", "b.tif", "c.gif", "d.png"):
        picture.save(tmp_path / name)
    files, errors = collect_inputs([str(tmp_path)])
    assert sorted(os.path.basename(f) for f in files) == ["a.tiff", "b.tif", "c.gif", "d.png"] and not errors


def test_a_sub_folder_that_vanishes_mid_walk_is_one_input_error_and_the_rest_is_kept(tmp_path, monkeypatch):
    """A folder removed while `gameqa score FOLDER` walks the tree (another job cleaning up) is reported by name;
    the files of the other folders are still collected (it was a FileNotFoundError traceback)."""
    import shutil

    from gameqa.scoring import collect_inputs

    for sub in ("a", "b", "c"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "clip.mp4").write_bytes(b"not decoded here")
    (tmp_path / "b" / "deeper").mkdir()
    real_scandir = os.scandir

    def scandir_after_a_cleanup(path="."):
        if not isinstance(path, int) and os.path.basename(os.fspath(path)) == "b":
            shutil.rmtree(path, ignore_errors=True)  # the folder really goes, between listing and reading it
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir_after_a_cleanup)
    files, errors = collect_inputs([str(tmp_path)])
    assert files == [str(tmp_path / "a" / "clip.mp4"), str(tmp_path / "c" / "clip.mp4")]
    assert [str(e) for e in errors] == [f"{tmp_path / 'b'}: cannot read folder (No such file or directory)"]


def test_callbacks_from_two_threads_see_only_their_own_batches(niqe_clip):
    """Each call's on_batch sees its own batches; none stays attached to the shared scorer afterwards."""
    import threading

    scorer = load("niqe", sample="uniform:4", batch_size=1)
    seen = {"a": 0, "b": 0}
    start = threading.Barrier(2)

    def run(key):
        start.wait()
        for _ in range(3):
            scorer.score(niqe_clip, on_batch=lambda frames, scores: seen.__setitem__(key, seen[key] + len(frames)))

    threads = [threading.Thread(target=run, args=(k,)) for k in seen]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {"a": 12, "b": 12}
    scorer.score(niqe_clip)
    assert seen == {"a": 12, "b": 12} and type(scorer._scorer.model).__name__ != "_ObservedModel"
