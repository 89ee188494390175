"""Model registry, ONNX Runtime engine and temporal pooling."""
import json

import numpy as np
import pytest

from gameqa.errors import ConfigError, ModelError
from gameqa.models.onnx_engine import crop_boxes
from gameqa.models.pooling import pool_scores
from gameqa.models.registry import card_from_model_dir, create_model, get_card, list_models, register_model_dir
from onnxgen import write_mean_model


def test_builtin_cards_carry_range_and_direction():
    names = [c.name for c in list_models()]
    assert {"psnr", "ssim", "niqe"} <= set(names)
    assert get_card("niqe").lower_better and get_card("niqe").reference == "none"
    assert not get_card("psnr").lower_better and get_card("psnr").full_reference
    assert [c.name for c in list_models("p*")] == ["psnr"]


def test_unknown_model_is_one_line():
    with pytest.raises(ModelError) as info:
        get_card("no-such-model")
    assert "unknown model 'no-such-model'" in str(info.value) and "\n" not in str(info.value)


def test_onnx_engine_scores_known_values(tmp_path):
    card = register_model_dir(write_mean_model(tmp_path / "m"))
    model = create_model(card.name, threads=2)
    frames = [np.full((40, 60, 3), v, np.uint8) for v in (0, 51, 255)]
    frames.append(np.full((30, 30, 3), 102, np.uint8))  # another size in the same batch
    scores = model.score_frames(frames)
    np.testing.assert_allclose(scores, [1.0, 1.8, 5.0, 2.6], atol=1e-5)


def test_onnx_engine_fixed_batch_and_crops(tmp_path):
    folder = write_mean_model(tmp_path / "fixed", name="test-fixed", fixed_batch=True,
                              extra={"input": {"scale": 255.0, "crops": {"size": 32, "count": 4}}})
    model = create_model(str(folder))  # a folder path works as a model name
    frame = np.zeros((64, 64, 3), np.uint8)
    frame[:32, :32] = 255  # one bright quadrant: the four corner crops average to 1 + 4 * 0.25
    np.testing.assert_allclose(model.score_frames([frame]), [2.0], atol=1e-5)


def test_full_reference_needs_reference(tmp_path):
    folder = write_mean_model(tmp_path / "fr", name="test-fr", channels=6, extra={"reference": "full"})
    model = create_model(str(folder))
    a = np.full((16, 16, 3), 128, np.uint8)
    with pytest.raises(ModelError):
        model.score_frames([a])
    # distorted 128 and difference 128 (identical frames): mean 128/255 over all 6 channels
    np.testing.assert_allclose(model.score_frames([a], [a]), [1 + 4 * 128 / 255], atol=1e-5)


def test_model_json_errors(tmp_path):
    folder = write_mean_model(tmp_path / "bad", extra={"colour": "blue"})
    with pytest.raises(ConfigError, match="unknown keys"):
        card_from_model_dir(folder)
    spec = json.loads((folder / "model.json").read_text())
    del spec["colour"]
    spec["weights"] = "missing.onnx"
    (folder / "model.json").write_text(json.dumps(spec))
    with pytest.raises(ModelError, match="weight file not found"):
        card_from_model_dir(folder)
    (folder / "model.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read"):
        card_from_model_dir(folder)
    (folder / "model.json").write_bytes('{"name": "écran"}'.encode("latin-1"))
    with pytest.raises(ConfigError, match="model description is not UTF-8 text"):
        card_from_model_dir(folder)
    good = json.loads((write_mean_model(tmp_path / "range") / "model.json").read_text())
    for score_range, problem in (("abc", "must be \\[low, high\\] numbers"), ([5, 1], "low must be below high")):
        (tmp_path / "range" / "model.json").write_text(json.dumps({**good, "score_range": score_range}))
        with pytest.raises(ConfigError, match=problem):
            card_from_model_dir(tmp_path / "range")


def test_crop_boxes_cover_frame_evenly():
    boxes = crop_boxes(720, 1280, 256, 6)
    assert len(boxes) == 6
    ys = sorted({y for y, _ in boxes})
    xs = sorted({x for _, x in boxes})
    assert ys[0] == 0 and ys[-1] == 720 - 256 and xs[0] == 0 and xs[-1] == 1280 - 256
    assert crop_boxes(100, 100, 256, 4) == [(0, 0)]
    # one row of crops sits at mid-height (a top row missed the action in flat 2D levels), one column mid-width
    assert crop_boxes(720, 1280, 224, 2) == [(248, 0), (248, 1056)]
    assert crop_boxes(1280, 720, 224, 2) == [(0, 248), (1056, 248)]


def test_pooling():
    s = np.array([5.0, 4.0, 1.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0])
    assert pool_scores(s, "mean") == pytest.approx(3.8)
    assert pool_scores(s, "worst") == 1.0  # worst 10% of 10 frames = the single lowest
    assert pool_scores(s, "worst:20") == pytest.approx(2.5)
    assert pool_scores(s, "worst:10", lower_better=True) == 5.0
    with pytest.raises(ConfigError):
        pool_scores(s, "best")
    with pytest.raises(ConfigError):
        pool_scores(s, "worst:0")


def test_a_folder_never_replaces_a_registered_model_of_the_same_name(tmp_path):
    from gameqa.errors import ModelError
    from gameqa.models.registry import DEFAULT_MODEL

    bundled = get_card(DEFAULT_MODEL)
    other = write_mean_model(tmp_path / "same-name", name=DEFAULT_MODEL)
    card = get_card(str(other))  # scored by path: its own card...
    assert card.name == DEFAULT_MODEL and card.weights.parent == other
    assert get_card(DEFAULT_MODEL) is bundled  # ...while the name still means the bundled model
    with pytest.raises(ModelError, match="already taken"):
        register_model_dir(other)
    assert register_model_dir(other, replace=True).weights.parent == other
    register_model_dir(bundled.weights.parent, replace=True)  # put the bundled one back for later tests
    assert get_card(DEFAULT_MODEL).weights == bundled.weights
    again = write_mean_model(tmp_path / "fresh", name="registry-fresh-name")
    assert register_model_dir(again).name == register_model_dir(again).name  # the same folder twice is fine


def test_texture_boxes_pick_the_detailed_windows():
    from gameqa.models.onnx_engine import choose_boxes, texture_boxes

    frame = np.full((720, 1280, 3), 90, np.uint8)  # flat, with one busy patch at the right
    frame[100:600, 900:1280] = np.random.default_rng(0).integers(0, 256, (500, 380, 3))
    boxes = texture_boxes(frame, 320, 4)
    assert len(boxes) == 4 and boxes == texture_boxes(frame.copy(), 320, 4)  # deterministic
    for y, x in boxes:
        assert x + 320 > 900 and 0 <= y <= 400 and 0 <= x <= 960  # every crop reaches into the busy patch
    for i, (y, x) in enumerate(boxes):  # no two crops overlap by more than half a crop both ways
        assert all(abs(y - cy) >= 160 or abs(x - cx) >= 160 for cy, cx in boxes[:i])
    assert texture_boxes(frame[:200, :300], 320, 4) == [(0, 0)]  # smaller than a crop: the whole frame
    assert len(texture_boxes(frame[:300, :700], 320, 4)) == 4  # too small for 4 apart: the best overlapping ones
    assert choose_boxes(frame, 320, 4, "grid") == crop_boxes(720, 1280, 320, 4)
    with pytest.raises(ModelError, match="crop mode"):
        choose_boxes(frame, 320, 4, "random")


def test_typical_boxes_pick_windows_of_the_frames_usual_detail():
    from gameqa.models.onnx_engine import choose_boxes, texture_boxes, typical_boxes

    rng = np.random.default_rng(0)
    frame = np.full((720, 1280, 3), 90, np.uint8)  # flat left, mildly textured middle, very busy right
    frame[:, 427:853] = rng.integers(80, 101, (720, 426, 3))
    frame[:, 853:] = rng.integers(0, 256, (720, 427, 3))
    (y, x), = typical_boxes(frame, 320, 1)
    assert 427 <= x and x + 320 <= 853  # the median window: the middle third, neither flat nor busiest
    assert texture_boxes(frame, 320, 1)[0][1] + 320 > 853  # where the busiest window is in the busy third
    assert choose_boxes(frame, 320, 1, "typical") == [(y, x)] == typical_boxes(frame.copy(), 320, 1)
    three = typical_boxes(frame, 320, 3)  # quantiles 1/6, 1/2, 5/6: flat, typical, busy, kept apart
    assert len(three) == 3 and three[1] == (y, x)
    assert three[0][1] < 427 and three[2][1] + 320 > 853
    for i, (cy, cx) in enumerate(three):
        assert all(abs(cy - py) >= 160 or abs(cx - px) >= 160 for py, px in three[:i])
    assert typical_boxes(frame[:200, :300], 320, 2) == [(0, 0)]  # smaller than a crop: the whole frame
    assert len(typical_boxes(frame[:300, :700], 320, 4)) == 4  # too small for 4 apart: overlapping ones


def test_engine_texture_mode_scores_the_detailed_part(tmp_path):
    frame = np.full((720, 1280, 3), 20, np.uint8)
    frame[400:720, 0:320] = np.random.default_rng(1).integers(100, 256, (320, 320, 3))  # bright busy corner
    scores = {}
    for mode in ("grid", "texture", "typical"):
        folder = write_mean_model(tmp_path / mode, name=f"mean-{mode}",
                                  extra={"input": {"scale": 255.0, "crops": {"size": 320, "count": 1, "mode": mode}}})
        scores[mode] = float(create_model(str(folder)).score_frames([frame])[0])
    # one centred grid crop sees the dark middle; the texture crop lands on the bright corner
    assert scores["texture"] > scores["grid"] + 1.0
    assert scores["texture"] > scores["typical"] + 1.0  # the typical window of a mostly dark frame is dark
    bad = write_mean_model(tmp_path / "bad", name="mean-bad",
                           extra={"input": {"crops": {"size": 320, "count": 1, "mode": "random"}}})
    with pytest.raises(ModelError, match="crops.mode"):
        create_model(str(bad))


@pytest.mark.parametrize("channels", [3, 6])
def test_engine_normalisation_is_the_per_pixel_formula_for_every_value(channels):
    """The engine's table lookup for uint8 crops gives exactly ``(v / scale - mean) / std`` in float32 (the
    arithmetic the other inputs get, and the trainers' normalisation), for all 256 values in every channel."""
    from gameqa.models.onnx_engine import normalise_input

    pre = {"scale": 255.0, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    values = np.arange(256, dtype=np.uint8)
    crops = [np.stack([np.roll(values, 7 * c) for c in range(channels)], axis=-1).reshape(16, 16, channels)
             for _ in range(2)]
    crops[1] = crops[1][::-1, ::-1]  # a view, not a fresh array, as crops cut from a frame are
    got = normalise_input(crops, pre)
    reps = channels // 3
    mean = np.asarray(pre["mean"] * reps, np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(pre["std"] * reps, np.float32).reshape(1, -1, 1, 1)
    want = (np.stack(crops).transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0) - mean) / std
    assert got.dtype == np.float32 and got.shape == (2, channels, 16, 16) and got.flags["C_CONTIGUOUS"]
    assert np.array_equal(got, want)
    floats = normalise_input([c.astype(np.float32) for c in crops], pre)  # any other input: the arithmetic
    assert np.array_equal(floats, want)
