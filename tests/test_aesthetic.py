"""The mean-and-spread model: network shapes, ONNX export and scoring, head training, agreement measures, the
simulated panel path end to end (tiny backbone), configs and the CLI commands."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

import clipgen

from gameqa.errors import ConfigError, ModelError
from gameqa.evaluate.agreement import (binary_accuracy, intervals_overlap, mean_spread_report, ordered_pairs,
                                       std_from_mean_fit)
from gameqa.models.aesthetic import LMLSP, MeanSpreadHeads, MeanSpreadNet, MultiLevelBackbone, export_onnx
from gameqa.models.aesthetic_cli import register
from gameqa.models.aesthetic_onnx import SpreadScorer, mean_interval, prepare_image, resize_for_model
from gameqa.train import aesthetic as train_mod


def tiny_net(scale=(1.0, 10.0), attention=True, pooling="avg", design="stage-masks") -> MeanSpreadNet:
    backbone = MultiLevelBackbone("tiny")
    pool = LMLSP(backbone.level_channels, pooling)
    heads = MeanSpreadHeads(pool.level_dims, scale, attention=attention, hidden=16, reduction=4,
                            attention_design=design)
    return MeanSpreadNet(backbone, pool, heads).eval()


@pytest.mark.parametrize("attention,design", [(True, "stage-masks"), (True, "state-masks"), (False, "stage-masks")])
@pytest.mark.parametrize("pooling", ["avg", "avgstd"])
def test_any_size_gives_mean_and_positive_std(attention, design, pooling):
    net = tiny_net((0.0, 100.0), attention, pooling, design)
    for h, w in [(64, 64), (48, 96), (33, 71)]:
        mean, std = net(torch.randn(2, 3, h, w))
        assert mean.shape == (2,) and std.shape == (2,)
        assert torch.all(std > 0)
    dims = net.pooling.level_dims
    assert dims == ([16, 32, 64] if pooling == "avgstd" else [8, 16, 32])
    # the heads start at the data's average mean and std
    heads = MeanSpreadHeads(dims, (0.0, 100.0), init_mean=0.55, init_std=0.2, hidden=16, reduction=4)
    for p in list(heads.mean_out[-1].parameters())[:1] + list(heads.std_out[-1].parameters())[:1]:
        torch.nn.init.zeros_(p)  # zero output weights: outputs are exactly the initial biases
    m, s = heads(torch.randn(3, sum(dims)))
    assert torch.allclose(m, torch.full((3,), 55.0)) and torch.allclose(s, torch.full((3,), 20.0), atol=1e-4)


def test_stage_masks_start_as_the_shared_layer_and_become_task_specific():
    """Both tasks' masks and stage gates start as the identity (both tasks read the shared layer's features);
    training makes the two tasks' masks differ, and a mask only ever scales a channel between 0 and 2."""
    torch.manual_seed(0)
    dims = [8, 16, 32]
    heads = MeanSpreadHeads(dims, (0.0, 1.0), hidden=16, reduction=4, dropout=0.0).eval()
    branches = heads.shared
    x = torch.randn(5, sum(dims))
    levels = torch.split(x, dims, dim=1)
    mean_feats, std_feats = branches(levels)
    shared = torch.relu(branches.shared(x))
    assert torch.allclose(mean_feats, shared) and torch.allclose(std_feats, shared)
    feats, ratings = synthetic_set(120)
    cfg = train_mod.AestheticConfig(model={"hidden": 16, "reduction": 4},
                                    train={"epochs": 15, "batch_size": 32, "lr": 3e-3, "threads": 1})
    trained = train_mod.train_heads(cfg, feats, [8, 16, 32], ratings, 0).shared
    mean_mask, std_mask = trained.masks[0][0], trained.masks[1][0]
    z = torch.randn(7, 8)
    with torch.no_grad():
        ratio_mean, ratio_std = mean_mask(z) / z, std_mask(z) / z
    assert not torch.allclose(ratio_mean, ratio_std, atol=1e-3)
    assert torch.all(ratio_mean >= 0) and torch.all(ratio_mean <= 2)
    assert not torch.allclose(trained.stage_gates[0], trained.stage_gates[1])
    with pytest.raises(ModelError, match="unknown attention design"):
        MeanSpreadHeads(dims, attention_design="spatial")


def test_lite0_levels_and_unknown_names():
    backbone = MultiLevelBackbone("efficientnet-lite0", pretrained=False)
    assert backbone.level_channels == [24, 40, 80, 112, 192, 320, 1280]
    maps = backbone(torch.zeros(1, 3, 64, 96))
    assert [m.shape[1] for m in maps] == backbone.level_channels
    assert maps[-1].shape[2:] == (2, 3)
    with pytest.raises(ModelError, match="unknown backbone"):
        MultiLevelBackbone("resnet9000")
    with pytest.raises(ModelError, match="unknown pooling"):
        LMLSP([8], "max")


def test_lmlsp_is_global_average_and_std():
    pool = LMLSP([2], "avgstd")
    x = torch.tensor([[[[1.0, 3.0]], [[2.0, 2.0]]]])  # 1 x 2 x 1 x 2
    assert pool([x])[0].tolist() == pytest.approx([2.0, 2.0, 1.0, 1e-3], abs=1e-3)


def test_prepare_image_resizes_only_large_images():
    big = np.zeros((300, 900, 3), np.uint8)
    assert resize_for_model(big, 512).shape == (171, 512, 3)
    small = np.zeros((100, 60, 3), np.uint8)
    assert resize_for_model(small, 512) is small
    assert resize_for_model(np.zeros((16, 64, 3), np.uint8), 512).shape == (32, 128, 3)
    with pytest.raises(ModelError, match="image 40x10 is too small to score"):  # a side under 16 px says nothing
        resize_for_model(np.zeros((10, 40, 3), np.uint8), 512)
    x = prepare_image(np.full((40, 50, 3), 255, np.uint8))
    assert x.shape == (1, 3, 40, 50) and x.dtype == np.float32
    assert x[0, 0, 0, 0] == pytest.approx((1 - 0.485) / 0.229, abs=1e-5)
    low, high = mean_interval(50.0, 20.0, 100)
    assert high - 50.0 == pytest.approx(1.98422 * 2.0, abs=1e-4)  # t(99) * 20 / 10
    assert all(np.isnan(mean_interval(1.0, 1.0, 1)))


def test_onnx_export_matches_torch_and_scorer(tmp_path):
    from PIL import Image

    torch.manual_seed(0)
    net = tiny_net((1.0, 10.0))
    export_onnx(net, tmp_path / "model.onnx", sample_size=64)
    (tmp_path / "model.json").write_text(json.dumps({"kind": "mean-spread", "name": "tiny-test", "scale": [1, 10],
                                                     "raters": 50, "max_side": 96}))
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (120, 80, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "a.png")
    scorer = SpreadScorer(tmp_path, raters=30)
    result = scorer.score(tmp_path / "a.png")
    x = torch.from_numpy(prepare_image(image, 96))
    assert x.shape[2:] == (96, 64)  # longer side 120 -> 96
    with torch.no_grad():
        m, s = net(x)
    assert result.mean == pytest.approx(min(max(float(m), 1.0), 10.0), abs=1e-4)  # clipped to the scale
    assert result.std == pytest.approx(float(s), abs=1e-4)
    assert result.ci_low <= result.mean <= result.ci_high and result.raters == 30
    half = 2.04523 * result.std / np.sqrt(30)  # t(29) * std / sqrt(n), then kept on the 1-10 scale
    assert result.ci_high == pytest.approx(min(result.mean + half, 10.0), rel=1e-4)
    assert result.ci_low == pytest.approx(max(result.mean - half, 1.0), rel=1e-4)
    assert 1.0 <= result.raters_low <= result.raters_high <= 10.0
    (tmp_path / "model.json").write_text(json.dumps({"kind": "frame", "name": "x"}))
    with pytest.raises(ModelError, match="not a mean-and-spread model"):
        SpreadScorer(tmp_path)
    (tmp_path / "model.json").write_bytes('{"kind": "mean-spread", "name": "écran"}'.encode("latin-1"))
    with pytest.raises(ModelError, match="not valid JSON"):
        SpreadScorer(tmp_path)
    with pytest.raises(ModelError, match="no such mean-and-spread model"):
        SpreadScorer(tmp_path / "missing")


def synthetic_set(count=240, seed=0):
    """Features where the mean follows dimension 0 and the spread dimension 5 (plus noise dimensions)."""
    from gameqa.data.ratings import RatingSet

    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(count, 8 + 16 + 32)).astype(np.float32)
    mean = 5.0 + 1.5 * feats[:, 0]
    std = 1.5 + 0.4 * np.tanh(feats[:, 5])
    n = rng.integers(50, 200, count)
    ids = tuple(f"{i}.png" for i in range(count))
    return feats, RatingSet("synthetic", ids, mean, std, n, (1.0, 10.0))


def test_validation_part_comes_from_the_training_part_only():
    _, ratings = synthetic_set(200)
    for seed in (0, 3):
        train_idx, test_idx = train_mod.split(ratings, seed, 0.2)
        fit_idx, val_idx = train_mod.validation_split(train_idx, seed, 0.2)
        assert len(val_idx) == 32 and len(fit_idx) == 128
        assert set(fit_idx) | set(val_idx) == set(train_idx) and not set(fit_idx) & set(val_idx)
        assert not (set(fit_idx) | set(val_idx)) & set(test_idx)
        assert np.array_equal(val_idx, train_mod.validation_split(train_idx, seed, 0.2)[1])  # reproducible
    assert not np.array_equal(train_mod.validation_split(train_idx, 0, 0.2)[1], val_idx)  # each seed its own


@pytest.mark.parametrize("rank", ["ci", "plain", "none"])
def test_heads_learn_mean_and_spread_from_features(rank):
    feats, ratings = synthetic_set(400)
    cfg = train_mod.AestheticConfig(model={"hidden": 32, "reduction": 8},
                                    loss={"rank": rank, "emd_weight": 0.0},
                                    train={"epochs": 60, "batch_size": 32, "lr": 3e-3, "threads": 1})
    train_idx, test_idx = train_mod.split(ratings, 0, 0.25)
    assert len(test_idx) == 100 and not set(train_idx) & set(test_idx)
    heads = train_mod.train_heads(cfg, feats[train_idx], [8, 16, 32], ratings.subset(train_idx), 0)
    pm, ps = train_mod.predict_heads(heads, feats[test_idx])
    report = mean_spread_report(pm, ps, ratings.mean[test_idx], ratings.std[test_idx], ratings.n[test_idx],
                                train_mean=ratings.mean[train_idx], train_std=ratings.std[train_idx], threshold=5.0)
    assert report["mean_srocc"] > 0.85
    assert report["std_srocc"] > 0.6
    assert report["ordered_pairs"] > 0.85 and report["binary_accuracy"] > 0.75
    assert report["std_rmse"] < report["std_rmse_average_baseline"]


def test_emd_term_trains_with_histograms():
    from gameqa.data.ratings import RatingSet, simulate_panel, summarise_histogram

    feats, base = synthetic_set(160, seed=1)
    counts = simulate_panel(np.clip(base.mean, 2, 9), np.full(160, 1.2), np.full(160, 100), np.random.default_rng(0))
    mean, std, n = summarise_histogram(counts, range(1, 11))
    ratings = RatingSet("hist", base.ids, mean, std, n, (1.0, 10.0), counts, tuple(float(b) for b in range(1, 11)))
    cfg = train_mod.AestheticConfig(model={"hidden": 16, "reduction": 4}, loss={"emd_weight": 1.0},
                                    train={"epochs": 30, "batch_size": 32, "lr": 3e-3, "threads": 1})
    heads = train_mod.train_heads(cfg, feats, [8, 16, 32], ratings, 0)
    pm, _ = train_mod.predict_heads(heads, feats)
    assert np.corrcoef(pm, mean)[0, 1] > 0.9


def test_agreement_hand_computed():
    # intervals: h = t(3) * std / 2 with n = 4 -> t(3) = 3.1824; std 1 -> +-1.5912
    mean = np.array([1.0, 2.0, 6.0, 10.0])
    std = np.ones(4)
    overlap = intervals_overlap(mean, std, 4)
    # gaps 1 (< 2 * 1.5912: overlap), 4 and more (apart): sure pairs (0,2) (0,3) (1,2) (1,3) (2,3);
    # predictions swap 2 and 3 -> 4 of 5 right
    assert overlap[0, 1] and not overlap[0, 2] and not overlap[1, 2] and not overlap[2, 3]
    share, count = ordered_pairs([1.0, 2.0, 10.0, 6.0], mean, std, 4)
    assert count == 5 and share == pytest.approx(0.8)
    # a tie counts half: (2,3) tied -> 4.5 / 5
    assert ordered_pairs([1.0, 2.0, 6.0, 6.0], mean, std, 4)[0] == pytest.approx(0.9)
    assert binary_accuracy([4.0, 6.0, 6.0], [4.5, 5.5, 4.0], 5.0) == pytest.approx(2 / 3)
    curve = std_from_mean_fit([0.0, 1.0, 2.0, 3.0], [1.0, 2.0, 5.0, 10.0])  # 1 + x^2
    assert curve([4.0]) == pytest.approx([17.0])


def test_configs_load_and_reject_bad_keys(tmp_path, monkeypatch):
    from gameqa.paths import REPO_ROOT

    monkeypatch.setenv("GAMEQA_CLIVE", str(tmp_path))
    cfg = train_mod.load_config(REPO_ROOT / "configs" / "aesthetic" / "clive.toml", ["train.seeds=3", 'loss.rank="plain"'])
    assert cfg.name == "clive-quality-spread" and cfg.purpose == "quality"
    assert cfg.train.seeds == 3 and cfg.loss.rank == "plain" and cfg.data.raters == 175
    sim = train_mod.load_config(REPO_ROOT / "configs" / "aesthetic" / "simulated.toml")
    assert sim.data.format == "simulated" and sim.purpose == "aesthetic"
    with pytest.raises(ConfigError, match="loss.rank"):
        train_mod.load_config(REPO_ROOT / "configs" / "aesthetic" / "clive.toml", ['loss.rank="pairwise"'])
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nepoch = 3\n")
    with pytest.raises(ConfigError, match="train.epoch") as info:
        train_mod.load_config(bad)
    assert str(info.value).startswith(str(bad))


@pytest.fixture(scope="module")
def simulated_config(tmp_path_factory):
    """A 48-image simulated panel with the tiny backbone: generation, AVA reader, cache, heads."""
    root = tmp_path_factory.mktemp("sim")
    toml = root / "sim.toml"
    toml.write_text(
        'name = "sim-test"\npurpose = "aesthetic"\n'
        '[data]\nformat = "simulated"\npath = "panel"\nthreshold = 5.0\n'
        '[data.simulated]\ncount = 48\nsize = 48\nseed = 3\n'
        f'[features]\nbackbone = "tiny"\ncache = "{root / "features"}"\n'
        '[model]\nhidden = 16\nreduction = 4\n'
        '[loss]\nemd_weight = 1.0\n'
        '[train]\nepochs = 5\nbatch_size = 16\nseeds = 2\nthreads = 1\n')
    return toml


def test_simulated_panel_end_to_end(simulated_config):
    cfg = train_mod.load_config(simulated_config)
    messages = []
    reports = train_mod.run_protocol(cfg, log=messages.append)
    assert len(reports) == 2 and any("simulated 48 images" in m for m in messages)
    for r in reports:
        for key in ("mean_srocc", "std_srocc", "ordered_pairs", "binary_accuracy", "mean_srocc_vs_truth"):
            assert key in r
        assert r["panel_std_srocc_vs_truth"] > 0.8  # ~210 raters estimate each spread well
    ratings = train_mod.load_ratings(cfg)
    assert len(ratings) == 48 and ratings.histogram is not None and 78 <= ratings.n.min()
    assert 2.0 < ratings.mean.min() and ratings.mean.max() < 8.5
    features, channels = train_mod.cached_features(cfg, ratings)
    assert features.shape == (48, 56) and channels == [8, 16, 32]
    assert train_mod.feature_cache_path(cfg, ratings).exists()
    summary = train_mod.summarise(reports)
    assert summary["mean_srocc"][1] >= 0.0
    validation = train_mod.run_protocol(cfg, seeds=1, log=messages.append, validation=True)
    assert "(validation)" in messages[-1] and len(validation) == 1 and "ordered_pairs" in validation[0]
    with pytest.raises(ConfigError, match="simulated ratings"):
        train_mod.train_final(cfg, simulated_config.parent / "out")


def test_finetune_trains_backbone_and_heads_end_to_end(simulated_config, tmp_path):
    """``train.finetune``: the protocol trains the backbone too (its weights move) and reports as the head-only
    protocol does; a final fine-tuned model exports and scores."""
    cfg = train_mod.load_config(simulated_config, ["train.finetune=true", "train.finetune_epochs=1",
                                                   "train.finetune_batch=8"])
    messages = []
    reports = train_mod.run_protocol(cfg, seeds=1, log=messages.append)
    assert len(reports) == 1 and any("fine-tune epoch 1/1" in m for m in messages)
    assert any("(fine-tuned)" in m for m in messages)
    assert np.isfinite(reports[0]["mean_srocc"]) and "ordered_pairs" in reports[0]
    ratings = train_mod.load_ratings(cfg)
    images = train_mod._load_images(cfg, ratings)
    net = train_mod.finetune(cfg, ratings, images, 0, log=messages.append)
    from gameqa.models.aesthetic import MultiLevelBackbone

    torch = pytest.importorskip("torch")
    builds = []
    for _ in range(2):  # finetune seeds torch with its seed, then builds the backbone: the same start here
        torch.manual_seed(0)
        builds.append(MultiLevelBackbone(cfg.features.backbone, pretrained=True))
    start, again = builds
    assert all(torch.equal(a, b) for a, b in zip(start.parameters(), again.parameters()))
    moved = [float((a.detach() - b.detach()).abs().max())
             for a, b in zip(net.backbone.parameters(), start.parameters())]
    assert max(moved) > 1e-4  # the backbone trained, not only the heads
    mean, std = train_mod.predict_images(net, images[:4])
    assert np.all(np.isfinite(mean)) and np.all(std > 0)


@pytest.mark.parametrize("pooling", ["avg", "avgstd"])
def test_features_are_the_same_in_the_finetune_layout(pooling):
    """Fine-tuning runs in the trainers' channels-last layout: the real Lite0 levels and their pooling give the
    same feature vector as in the plain layout (float64, so rounding does not hide a difference)."""
    torch = pytest.importorskip("torch")
    from gameqa.models.aesthetic import LMLSP, MultiLevelBackbone
    from gameqa.train.trainer import channels_last

    backbone = MultiLevelBackbone("efficientnet-lite0", pretrained=True).double().eval()
    pooling_net = LMLSP(backbone.level_channels, pooling).double()
    x = torch.rand(1, 3, 80, 112, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        plain = pooling_net(backbone(x))
        last = pooling_net(channels_last(backbone)(channels_last(x)))
    torch.testing.assert_close(last, plain, rtol=1e-10, atol=1e-12)


def test_train_panel_redraws_training_labels_only(simulated_config, tmp_path):
    cfg = train_mod.load_config(simulated_config, ["data.train_panel=6"])
    ratings = train_mod.load_ratings(cfg)
    train_idx, test_idx = train_mod.split(ratings, 0, cfg.train.test_fraction)
    labels = train_mod.training_labels(cfg, ratings.subset(train_idx), 0)
    assert labels.ids == ratings.subset(train_idx).ids and set(labels.n.tolist()) == {6}
    assert not np.allclose(labels.mean, ratings.mean[train_idx])
    plain = train_mod.load_config(simulated_config)
    own = ratings.subset(train_idx)
    assert train_mod.training_labels(plain, own, 0) is own
    report = train_mod.evaluate_split(cfg, *train_mod.cached_features(cfg, ratings), ratings, 0)
    own_report = train_mod.evaluate_split(plain, *train_mod.cached_features(plain, ratings), ratings, 0)
    assert report["mean_rmse"] != own_report["mean_rmse"]          # learnt from other labels,
    assert report["sure_pairs"] == own_report["sure_pairs"]        # judged on the full panel's intervals
    with pytest.raises(ConfigError, match="train_panel"):
        train_mod.load_config(simulated_config, ["data.train_panel=1"])
    with pytest.raises(ConfigError, match="train_panel"):
        train_mod.train_final(train_mod.load_config(simulated_config, ["data.train_panel=6", 'purpose="quality"']),
                              tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_train_final_exports_a_scorable_model(simulated_config, tmp_path):
    cfg = train_mod.load_config(simulated_config, ['purpose="quality"', 'name="sim-quality"'])
    messages = []
    out = train_mod.train_final(cfg, tmp_path / "model", log=messages.append)
    card = json.loads((out / "model.json").read_text())
    assert card["kind"] == "mean-spread" and card["scale"] == [1.0, 10.0] and card["name"] == "sim-quality"
    worst = float(messages[-1].rsplit(" ", 1)[1])
    assert worst < 1e-3
    ratings = train_mod.load_ratings(cfg)
    result = SpreadScorer(out).score(ratings.image_path(0))
    assert 1.0 <= result.mean <= 10.0 and result.std > 0


def test_train_final_int8_keeps_first_layers_pooling_and_heads_fp32(simulated_config, tmp_path):
    import onnx

    cfg = train_mod.load_config(simulated_config, ['purpose="quality"', 'name="sim-int8"'])
    messages = []
    out = train_mod.train_final(cfg, tmp_path / "model", log=messages.append, int8=True, calibration=8)
    card = json.loads((out / "int8" / "model.json").read_text())
    assert card["name"] == "sim-int8" and card["quantized"].startswith("int8 static") and "8 images" in card["quantized"]
    graph = onnx.load(str(out / "int8" / "model.onnx")).graph
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    quantized = [n.name for n in convs if n.input[1] in dequantized]
    assert quantized and all(n.startswith("/backbone") for n in quantized)  # int8 inside the backbone only
    assert convs[0].input[1] not in dequantized  # the full-resolution stem stays fp32
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.name.startswith(("/heads", "/pooling"))
                   for n in graph.node)
    line = messages[-1]
    assert line.startswith("int8:") and "vs fp32 on 8 other images" in line
    ratings = train_mod.load_ratings(cfg)
    fp32, int8 = SpreadScorer(out), SpreadScorer(out / "int8")
    got = [np.subtract(int8.predict(ratings.image_path(i)), fp32.predict(ratings.image_path(i))) for i in range(6)]
    assert 0 < np.abs(got).max() < 0.5  # quantized, yet close on the 1-10 scale


def test_cli_commands(simulated_config, tmp_path):
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    cfg = train_mod.load_config(simulated_config, ['purpose="quality"'])
    model = tmp_path / "m"
    res = runner.invoke(app, ["train-aesthetic", str(simulated_config), "--out", str(model), "--set", 'purpose="quality"'])
    assert res.exit_code == 0, res.output
    images = train_mod.load_ratings(cfg).root
    res = runner.invoke(app, ["aesthetics", str(images / "00000.jpg"), str(images / "00001.jpg"), "--model", str(model),
                              "--output", "json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)["results"]
    assert len(rows) == 2 and all(r["std"] > 0 and r["ci_low"] < r["mean"] < r["ci_high"] for r in rows)
    res = runner.invoke(app, ["aesthetics", str(images / "00000.jpg"), str(tmp_path / "nothing.png"), "--model", str(model)])
    assert res.exit_code == 1 and "1 of 2 inputs failed" in res.output
    res = runner.invoke(app, ["aesthetics", str(images / "00000.jpg"), "--model", str(tmp_path / "nomodel")])
    assert res.exit_code == 2 and "no such mean-and-spread model" in res.output
    mixed = tmp_path / "mixed"  # a folder gives its images; a video named on its own is called one
    mixed.mkdir()
    (mixed / "a.jpg").write_bytes((images / "00000.jpg").read_bytes())
    clipgen.make_clip(mixed / "clip.mp4")
    res = runner.invoke(app, ["aesthetics", str(mixed), "--model", str(model), "--output", "json"])
    assert res.exit_code == 0, res.output
    assert [Path(r["path"]).name for r in json.loads(res.stdout)["results"]] == ["a.jpg"]
    res = runner.invoke(app, ["aesthetics", str(mixed / "clip.mp4"), "--model", str(model)])
    assert res.exit_code == 1 and "clip.mp4: a video; `gameqa aesthetics` scores images" in res.output
    report = tmp_path / "eval.json"
    res = runner.invoke(app, ["eval-aesthetic", str(simulated_config), "--seeds", "1", "--rank", "ci,plain",
                              "--json", str(report)])
    assert res.exit_code == 0, res.output
    assert "rank=ci" in res.stdout and "rank=plain" in res.stdout and "ordered_pairs" in res.stdout
    assert set(json.loads(report.read_text())["reports"]) == {"ci", "plain"}
    res = runner.invoke(app, ["train-aesthetic", str(simulated_config), "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "simulated ratings" in res.output


def test_cli_quotes_csv_cells_and_refuses_bad_options_before_any_work(simulated_config, tmp_path):
    from PIL import Image

    from gameqa.models.aesthetic_onnx import bundled_models_dir

    app = typer.Typer()
    register(app)
    runner = CliRunner()
    for option, problem in ((["--rank", ","], "names no ranking loss"), (["--seeds", "0"], "greater than or equal to 1"),
                            (["--json", str(tmp_path / "no" / "s.json")], "does not exist")):
        res = runner.invoke(app, ["eval-aesthetic", str(simulated_config), *option])
        assert res.exit_code == 2 and problem in res.output, res.output
    if not (bundled_models_dir() / "clive-quality-spread" / "model.onnx").exists():
        pytest.skip("the CLIVE model folder is not bundled in this checkout")
    rng = np.random.default_rng(0)
    for name in ("a,b.png", 'q"x.png'):
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(tmp_path / name)
    res = runner.invoke(app, ["aesthetics", str(tmp_path / "a,b.png"), str(tmp_path / 'q"x.png'), "-o", "csv"])
    assert res.exit_code == 0, res.output
    rows = list(csv.reader(io.StringIO(res.stdout)))
    assert len({len(r) for r in rows}) == 1 and {Path(r[0]).name for r in rows[1:]} == {"a,b.png", 'q"x.png'}
    res = runner.invoke(app, ["aesthetics", str(tmp_path / "a,b.png"), "--raters", "0"])
    assert res.exit_code == 2 and "at least 2 raters, not 0" in res.output


def test_bundled_clive_model_scores_any_image(tmp_path):
    from PIL import Image

    from gameqa.models.aesthetic_onnx import bundled_models_dir

    folder = bundled_models_dir() / "clive-quality-spread"
    if not (folder / "model.onnx").exists():
        pytest.skip("the CLIVE model folder is not bundled in this checkout")
    scorer = SpreadScorer("clive-quality-spread")
    assert scorer.card.scale == (0.0, 100.0) and scorer.card.raters == 175
    rng = np.random.default_rng(1)
    smooth = np.kron(rng.integers(0, 256, (6, 8, 3)), np.ones((16, 16, 1))).astype(np.uint8)  # 96 x 128, blocky
    noisy = np.clip(smooth + rng.normal(0, 60, smooth.shape), 0, 255).astype(np.uint8)
    results = [scorer.score(img, path=name) for img, name in ((smooth, "smooth"), (noisy, "noisy"))]
    for r in results:
        assert 0.0 < r.std < 60.0 and -10.0 < r.mean < 110.0 and r.ci_low < r.mean < r.ci_high
    Image.fromarray(noisy).save(tmp_path / "noisy.png")
    assert SpreadScorer(folder).score(tmp_path / "noisy.png").mean == pytest.approx(results[1].mean, abs=1e-4)
    Image.fromarray(noisy[:2]).save(tmp_path / "sliver.png")  # 128 x 2: refused, naming the file
    with pytest.raises(ModelError, match=r"sliver\.png: image 128x2 is too small to score: each side needs at least 16 px"):
        scorer.score(tmp_path / "sliver.png")
    with pytest.raises(ModelError, match="strip: image 1200000x16 is too long and thin"):  # read at 2,400,000 x 32
        scorer.score(np.zeros((16, 1_200_000, 3), np.uint8), path="strip")


def test_int8_quantised_copy_runs(tmp_path):
    from gameqa.models.aesthetic_onnx import quantize_model_folder

    net = tiny_net((1.0, 10.0))
    src = tmp_path / "fp32"
    src.mkdir()
    export_onnx(net, src / "model.onnx", sample_size=64)
    (src / "model.json").write_text(json.dumps({"kind": "mean-spread", "name": "t", "scale": [1, 10]}))
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(4)]
    out = quantize_model_folder(src, tmp_path / "int8", images)
    assert json.loads((out / "model.json").read_text())["quantized"].startswith("int8 static")
    mean, std = SpreadScorer(out).predict(np.full((64, 64, 3), 128, np.uint8))
    assert np.isfinite(mean) and std > 0
    with pytest.raises(ModelError, match="at least one image"):
        quantize_model_folder(src, tmp_path / "none", [])


def test_simulated_set_is_made_again_when_its_settings_change(tmp_path):
    toml = tmp_path / "sim.toml"
    toml.write_text('name = "sim-stale"\npurpose = "aesthetic"\n[data]\nformat = "simulated"\npath = "panel"\n'
                    '[data.simulated]\ncount = 8\nsize = 32\nraters_mean = 210\n'
                    f'[features]\nbackbone = "tiny"\ncache = "{tmp_path / "features"}"\n')
    messages = []
    big = train_mod.load_ratings(train_mod.load_config(toml), log=messages.append)
    again = train_mod.load_ratings(train_mod.load_config(toml), log=messages.append)
    assert len(messages) == 1 and np.array_equal(big.n, again.n)   # same settings: the panel on disk is reused
    small_cfg = train_mod.load_config(toml, ["data.simulated.raters_mean=5", "data.simulated.raters_min=3"])
    small = train_mod.load_ratings(small_cfg, log=messages.append)
    assert len(messages) == 2 and small.n.max() < 78 <= big.n.min()   # a new panel, not the stale one
    assert train_mod.feature_cache_path(small_cfg, small) == train_mod.feature_cache_path(train_mod.load_config(toml), big)
    resized = train_mod.load_config(toml, ["data.simulated.size=48"])
    assert train_mod.feature_cache_path(resized, train_mod.load_ratings(resized, log=messages.append)) != \
        train_mod.feature_cache_path(small_cfg, small)   # other images: other cached features
