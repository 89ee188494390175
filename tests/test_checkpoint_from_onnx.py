"""`gameqa checkpoint-from-onnx`: an exported model back to a training checkpoint. A tiny model trained on the tiny
real corpus goes torch -> ONNX (fp32, BatchNorm folded by the exporter) -> torch and must score as before; the
bundled int8 models are rebuilt and compared with their own ONNX engines on the bundled clip; bad input fails
with one line and writes nothing."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from typer.testing import CliRunner  # noqa: E402

from test_eraque import corpus, quiet, tiny_config  # noqa: E402,F401  (corpus is a fixture)


def _cli(args: list[str]):
    from gameqa.cli import app

    return CliRunner().invoke(app, args)


@pytest.fixture(scope="module")
def tiny_export(corpus, tmp_path_factory):  # noqa: F811
    """A tiny model trained for 3 steps and its fp32 export."""
    from gameqa.train.trainer import Trainer

    work = tmp_path_factory.mktemp("reimport-run")
    cfg = tiny_config(corpus, work / "w", ["train.max_steps=3", "name=tiny-reimport", "input.crop_size=64",
                                           "input.crops_per_frame=2"])
    trained = Trainer(cfg, log=quiet).fit().run_dir / "best.pt"
    # three steps leave BatchNorm near its start (mean 0, variance 1, no shift): give it statistics and shifts of
    # its own, so that a folded BatchNorm put back wrong shows in the scores
    state = torch.load(trained, map_location="cpu", weights_only=False)
    gen = torch.Generator().manual_seed(0)
    for key, value in state["model"].items():
        if key.endswith(("running_mean", "bias")) and key.startswith("backbone."):
            value.copy_(0.3 * torch.randn(value.shape, generator=gen))
        elif key.endswith("running_var"):
            value.copy_(0.5 + torch.rand(value.shape, generator=gen))
    ckpt = work / "shifted.pt"
    torch.save(state, ckpt)
    out = work / "tiny-export"
    done = _cli(["export", str(ckpt), "--out", str(out), "--check-clips", "0"])
    assert done.exit_code == 0, done.output
    return {"ckpt": ckpt, "folder": out, "work": work, "corpus": corpus}


def _bundled_frames(n: int = 4) -> list:
    from gameqa.media.video import read_frames
    from gameqa.paths import bundled_clip

    return [f.rgb for f in read_frames(bundled_clip(), f"uniform:{n}")]


def test_tiny_model_round_trip_scores_as_before(tiny_export):
    from gameqa.train.trainer import load_checkpoint, model_from_checkpoint, torch_frame_scores

    out = tiny_export["work"] / "rebuilt.pt"
    done = _cli(["checkpoint-from-onnx", str(tiny_export["folder"]), "--out", str(out), "--json"])
    assert done.exit_code == 0, done.output
    summary = json.loads(done.output)
    assert (summary["backbone"], summary["crop_size"], summary["crops"]) == ("tiny", 64, 2)
    assert summary["check"]["max_abs_diff"] < 1e-3  # fp32 ONNX: only float rounding
    frames = _bundled_frames()
    before, _ = model_from_checkpoint(load_checkpoint(tiny_export["ckpt"]))
    after, cfg = model_from_checkpoint(load_checkpoint(out))
    a = torch_frame_scores(before, frames, None, 64, 2)
    b = torch_frame_scores(after, frames, None, cfg.input.crop_size, cfg.input.crops_per_frame)
    np.testing.assert_allclose(b, a, atol=1e-3)
    assert np.ptp(a) > 0  # the frames score differently: the comparison can fail


def test_rebuilt_checkpoint_starts_a_training_run(tiny_export):
    from gameqa.train.trainer import Trainer

    out = tiny_export["work"] / "init.pt"
    assert _cli(["checkpoint-from-onnx", str(tiny_export["folder"]), "--out", str(out)]).exit_code == 0
    lines: list[str] = []
    cfg = tiny_config(tiny_export["corpus"], tiny_export["work"] / "from-init",
                      ["train.max_steps=1", "name=tiny-from-onnx", "input.crop_size=64", f"model.init={out}"])
    Trainer(cfg, log=lines.append).fit()
    assert any(line.startswith("initialised ") and "tensors from" in line for line in lines), lines
    copied = next(line for line in lines if line.startswith("initialised ")).split()
    assert copied[1] == copied[3]  # every tensor


@pytest.mark.parametrize("model, backbone", [("eraque-student", "mobilenetv2-1.0"), ("eraque", "efficientnet-lite0")])
def test_bundled_int8_models_rebuild_within_their_int8_rounding(model, backbone, tmp_path):
    out = tmp_path / f"{model}.pt"
    done = _cli(["checkpoint-from-onnx", model, "--out", str(out), "--json"])
    assert done.exit_code == 0, done.output
    summary = json.loads(done.output)
    assert summary["backbone"] == backbone
    # int8 vs fp32 on the bundled models is below 0.05 on every test clip (docs/models); the rebuilt fp32 net
    # must agree with the int8 file as closely
    assert summary["check"]["max_abs_diff"] < 0.05
    assert summary["check"]["frames"] == 8


def test_bad_inputs_fail_with_one_line_and_write_nothing(tiny_export, tmp_path):
    bad = tmp_path / "bad-model"
    shutil.copytree(tiny_export["folder"], bad, ignore=shutil.ignore_patterns("*.onnx"))
    (bad / "model.onnx").write_bytes(b"not an onnx file")
    out = tmp_path / "x.pt"
    done = _cli(["checkpoint-from-onnx", str(bad), "--out", str(out)])
    assert done.exit_code == 1
    assert "model.onnx" in done.output and "cannot read ONNX graph" in done.output
    assert len(done.output.strip().splitlines()) == 1
    assert not out.exists()

    for args, words in [(["brisque"], "no exported network"), (["no-such-model"], "unknown model"),
                        ([str(tiny_export["folder"]), "--out", str(tmp_path / "x.onnx")], "ends in .pt")]:
        if "--out" not in args:
            args = [*args, "--out", str(out)]
        done = _cli(["checkpoint-from-onnx", *args])
        assert done.exit_code == 1 and words in done.output, done.output
        assert not out.exists()

    out.write_bytes(b"keep me")
    done = _cli(["checkpoint-from-onnx", str(tiny_export["folder"]), "--out", str(out)])
    assert done.exit_code == 1 and "exists already" in done.output
    assert out.read_bytes() == b"keep me"
