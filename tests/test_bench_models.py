"""`gameqa bench models` on a tiny exported ERAQUE model (fp32 and dynamic int8) from the tiny real corpus of
test_eraque: graph parameters and MACs against the torch network, real timing, a real x264 clip, SROCC/PLCC."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from typer.testing import CliRunner  # noqa: E402

from test_eraque import corpus, quiet, tiny_config  # noqa: E402,F401  (corpus is a fixture)


@pytest.fixture(scope="module")
def models(corpus, tmp_path_factory):  # noqa: F811
    """A tiny model trained 3 steps, exported with its dynamic int8 variant; and the torch network."""
    from gameqa.export.formats import export_model
    from gameqa.train.trainer import Trainer, load_checkpoint, model_from_checkpoint

    work = tmp_path_factory.mktemp("bench-models")
    result = Trainer(tiny_config(corpus, work / "w", ["train.max_steps=3", "name=tiny-bench"]), log=quiet).fit()
    out = work / "tiny"
    export_model(result.run_dir / "best.pt", out, int8=["dynamic"], bundled_frames=2)
    net, _cfg = model_from_checkpoint(load_checkpoint(result.run_dir / "best.pt"))
    return {"fp32": out, "int8": out / "int8-dynamic", "net": net, "frames": work / "frames",
            "manifest": corpus / "manifests" / "corpus.csv"}


def _torch_cost(net, size: int) -> tuple[int, int, int]:
    """MACs of one size x size crop counted with forward hooks, all parameters, and BatchNorm channels."""
    macs = [0]

    def hook(module, _inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            macs[0] += output.numel() * module.weight[0].numel()
        elif isinstance(module, torch.nn.Linear):
            macs[0] += output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in net.modules()]
    with torch.no_grad():
        net(torch.zeros(1, 3, size, size))
    for h in handles:
        h.remove()
    params = sum(p.numel() for p in net.parameters())
    bn = sum(m.num_features for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    return macs[0], params, bn


def test_graph_cost_matches_the_torch_network(models):
    from gameqa.export.graph import graph_cost

    macs, params, bn_channels = _torch_cost(models["net"], 64)
    fp32 = graph_cost(models["fp32"] / "model.onnx", 64)
    int8 = graph_cost(models["int8"] / "model.onnx", 64)
    assert fp32.macs == macs and int8.macs == macs and fp32.input_shape == (1, 3, 64, 64)
    # BatchNorm folds into the convolutions on export: its scale/shift pair becomes one bias per channel.
    assert fp32.parameters == params - bn_channels == int8.parameters
    assert graph_cost(models["fp32"] / "model.onnx", (96, 128), batch=2).macs > 2 * macs  # shapes follow the input


def test_bench_models_table_and_json(models, tmp_path):
    from gameqa.cli import app

    report_path = tmp_path / "out" / "bench.json"
    args = ["bench", "models", str(models["fp32"]), str(models["int8"]), "--repeats", "2",
            "--clip-seconds", "1", "--clip-size", "320x180", "--clip-fps", "10", "--clip-repeats", "1",
            "--sample", "uniform:3", "--manifest", str(models["manifest"]), "--split", "test",
            "--frames-cache", str(models["frames"]), "--json", str(report_path)]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    assert "tiny-bench-int8-dynamic" in done.stdout and "ms/frame 1080p 2t" in done.stdout
    report = json.loads(report_path.read_text())
    fp32, int8 = report["models"]
    macs, _params, _bn = _torch_cost(models["net"], 64)
    for row in (fp32, int8):
        assert row["macs_per_input"] == macs
        # The engine takes 2 crops of 64 px from a 720p or 1080p frame: MACs per frame are twice one crop's.
        assert row["inputs_per_frame"] == {"720": 2, "1080": 2} and row["macs_per_frame"]["1080"] == 2 * macs
        assert set(row["ms_per_frame"]) == {"720p_1t", "720p_2t", "1080p_1t", "1080p_2t"}
        assert all(0 < v["best"] <= v["median"] for v in row["ms_per_frame"].values())
        assert row["clip_s"] > 0 and row["clip_model_s"] == pytest.approx(row["clip_s"] - report["clip"]["decode_s"], abs=2e-3)
        assert 1.0 <= row["clip_score"] <= 5.0
        assert row["eval"]["clips"] == 3 and -1.0 <= row["eval"]["srocc"] <= 1.0
    assert fp32["parameters"] == int8["parameters"] and fp32["size_mb"] > 0
    assert all(v == 1.0 for v in fp32["speedup_vs_first"].values())
    # Per-clip predictions are kept, and the int8 folder is compared clip by clip with its fp32 folder.
    assert len(int8["eval"]["predictions"]) == 3 and int8["eval"]["clip_ids"] == fp32["eval"]["clip_ids"]
    vs = int8["eval"]["vs_fp32"]
    diff = np.abs(np.subtract(int8["eval"]["predictions"], fp32["eval"]["predictions"]))
    assert vs["of"] == "tiny-bench" and vs["max_abs"] == pytest.approx(diff.max()) and vs["max_abs"] > 0
    assert "vs_fp32" not in fp32["eval"] and "Δ" in done.stdout  # the column (rich may wrap its header)
    clip = report["clip"]
    assert (clip["width"], clip["height"], clip["frames"], clip["sampled_frames"]) == (320, 180, 10, 3)
    assert clip["codec"] == "h264" and clip["decode_s"] > 0


def test_bench_models_on_a_given_clip_without_clip_or_eval(models, tmp_path, clip_factory):
    from gameqa.bench.models import bench_models

    clip = clip_factory("bench_models_160.mp4", size=(160, 120), fps=10, seconds=1.0)
    report = bench_models([str(models["int8"])], threads=[1], heights=[360], repeats=1, clip=clip, clip_repeats=1)
    row = report["models"][0]
    assert row["model"] == "tiny-bench-int8-dynamic" and set(row["ms_per_frame"]) == {"360p_1t"}
    assert report["clip"]["frames"] == 10 and "eval" not in row
    assert bench_models([str(models["fp32"])], threads=[1], heights=[360], repeats=1, make_clip=False)["clip"] is None


def test_bench_models_bad_input_fails_in_one_line(models, tmp_path):
    from gameqa.cli import app

    report_path = tmp_path / "bench.json"
    cases = [
        (["no-such-model"], "unknown model 'no-such-model'"),
        ([str(models["fp32"]), "--clip", str(tmp_path / "missing.mp4")], "missing.mp4"),
        ([str(models["fp32"]), "--threads", "one"], "--threads must be comma-separated integers"),
        ([str(models["fp32"]), "--clip-size", "big"], "clip size must be WIDTHxHEIGHT"),
        ([str(models["fp32"]), "psnr"], "'psnr' is full-reference: bench models times no-reference models"),
    ]
    for extra, message in cases:
        done = CliRunner().invoke(app, ["bench", "models", *extra, "--no-clip", "--repeats", "1",
                                        "--json", str(report_path)] if "--clip" not in extra else
                                  ["bench", "models", *extra, "--repeats", "1", "--json", str(report_path)])
        assert done.exit_code == 1, done.output
        text = done.output.strip()
        assert message in text and len(text.splitlines()) == 1 and "Traceback" not in text, text
        assert not report_path.exists()
