"""`gameqa export` to every format (fixed-batch ONNX, TorchScript, static and dynamic int8) on a tiny trained
ERAQUE model and the tiny real corpus of test_eraque: real ONNX Runtime quantization calibrated on cached corpus
frames, real scoring of the int8 folders through the registry, and the errors (nothing half-written)."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from typer.testing import CliRunner  # noqa: E402

from test_eraque import corpus, quiet, tiny_config  # noqa: E402,F401  (corpus is a fixture)


@pytest.fixture(scope="module")
def tiny_run(corpus, tmp_path_factory):  # noqa: F811
    """A tiny model trained for 3 steps; its frame cache (uniform:3) holds every clip of the corpus."""
    from gameqa.train.trainer import Trainer

    work = tmp_path_factory.mktemp("export-run")
    cfg = tiny_config(corpus, work / "w", ["train.max_steps=3", "name=tiny-export"])
    result = Trainer(cfg, log=quiet).fit()
    return {"ckpt": result.run_dir / "best.pt", "frames": work / "frames",
            "manifest": corpus / "manifests" / "corpus.csv"}


def _export(args: list[str]):
    from gameqa.cli import app

    return CliRunner().invoke(app, ["export", *args])


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "tiny"
    done = _export([str(tiny_run["ckpt"]), "--out", str(out), "--int8", "static,dynamic", "--fixed-batch", "2",
                    "--torchscript", "--calibration", str(tiny_run["manifest"]), "--calibration-clips", "20",
                    "--calibration-frames", "2", "--check-clips", "5", "--frames-cache", str(tiny_run["frames"]),
                    "--json"])
    assert done.exit_code == 0, done.output
    summary = json.loads(done.stdout[done.stdout.index("{"):])
    return out, summary


def test_every_format_is_written_and_checked_against_torch(exported):
    out, summary = exported
    checks = {c["file"]: c for c in summary["checks"]}
    assert set(checks) == {"model.onnx", "model.b2.onnx", "model.torchscript.pt", "int8/model.onnx",
                           "int8-dynamic/model.onnx"}
    assert summary["check_frames"]["frames"] == 6 + 3 * 2  # bundled clip frames + val-split corpus frames
    for name in ("model.onnx", "model.b2.onnx", "model.torchscript.pt"):
        assert checks[name]["max_abs_diff"] < 1e-4, name
    for name in ("int8/model.onnx", "int8-dynamic/model.onnx"):
        c = checks[name]
        assert 0 < c["mean_abs_diff"] <= c["max_abs_diff"] < 0.5, c  # quantized: close to torch, yet not equal
    # Asked for 20 train and 5 val clips, the corpus has 12 and 3: the summary says what was used.
    assert summary["calibration"]["clips"] == 12 and summary["calibration"]["frames"] == 12 * 2
    assert summary["calibration"]["split"] == "train" and summary["check_frames"]["manifest_clips"] == 3
    # The fixed-batch graph has a fully static input; the main graph keeps its dynamic axes.
    fixed = onnx.load(str(out / "model.b2.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in fixed] == [2, 3, 64, 64]
    dynamic = onnx.load(str(out / "model.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert dynamic[0].dim_param and dynamic[2].dim_param
    # Real quantization: int8 weights behind DequantizeLinear (static), ConvInteger (dynamic).
    static_ops = {n.op_type for n in onnx.load(str(out / "int8" / "model.onnx")).graph.node}
    dynamic_ops = {n.op_type for n in onnx.load(str(out / "int8-dynamic" / "model.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= static_ops and "ConvInteger" in dynamic_ops
    assert json.loads((out / "export.json").read_text())["checks"] == summary["checks"]


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_torchscript_file_runs_like_the_checkpoint(exported, tiny_run):
    from gameqa.train.trainer import load_checkpoint, model_from_checkpoint

    out, _ = exported
    model, _cfg = model_from_checkpoint(load_checkpoint(tiny_run["ckpt"]))
    scripted = torch.jit.load(str(out / "model.torchscript.pt"))
    x = torch.randn(5, 3, 80, 64)  # another batch and crop shape than the trace's
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x), atol=1e-5, rtol=0)


def test_int8_folders_register_score_and_their_reported_diffs_hold(exported, tiny_run, corpus):  # noqa: F811
    from gameqa.data.manifest import read_manifest
    from gameqa.models.registry import card_from_model_dir, register_model_dir
    from gameqa.train.frames import FrameCache
    from gameqa.train.trainer import load_checkpoint, model_from_checkpoint, torch_frame_scores

    out, summary = exported
    checks = {c["file"]: c for c in summary["checks"]}
    assert register_model_dir(out / "int8").name == "tiny-export-int8"
    assert register_model_dir(out / "int8-dynamic").name == "tiny-export-int8-dynamic"
    spec = json.loads((out / "int8" / "model.json").read_text())
    assert "static int8" in spec["description"] and "max abs diff" in spec["description"]
    assert spec["input"] == json.loads((out / "model.json").read_text())["input"]

    from gameqa.cli import app

    clip = corpus / "clips" / "src5" / "lq.mp4"
    scores = {}
    # By registry name (registered above) and by folder path, through the unchanged `gameqa score`.
    for key, model in [("fp32", str(out)), ("static", "tiny-export-int8"), ("dynamic", str(out / "int8-dynamic"))]:
        done = CliRunner().invoke(app, ["score", str(clip), "--model", model, "--sample", "uniform:3", "--output", "json"])
        assert done.exit_code == 0, done.output
        scores[key] = json.loads(done.stdout)[0]["overall"]
    assert all(1.0 <= s <= 5.0 for s in scores.values())
    assert abs(scores["static"] - scores["fp32"]) < 0.5 and abs(scores["dynamic"] - scores["fp32"]) < 0.5

    # Recompute the check on the val-split frames: int8 engine vs torch stays within the reported max.
    model, _cfg = model_from_checkpoint(load_checkpoint(tiny_run["ckpt"]))
    rows = [r for r in read_manifest(tiny_run["manifest"], root=corpus) if r["split"] == "val"]
    cache = FrameCache(tiny_run["frames"], "uniform:8")
    frames = []
    for row in rows:
        entry = cache.clip_frames(row["abs_path"], row["display_width"], row["display_height"])
        frames += [entry.load(0), entry.load(len(entry) - 1)]
    expected = torch_frame_scores(model, frames, None, 64, 2)
    card = card_from_model_dir(out / "int8")  # static scales: a crop's score does not depend on its batch
    got = card.factory(card, 1).score_frames(frames)
    assert float(np.abs(got - expected).max()) <= checks["int8/model.onnx"]["max_abs_diff"] + 1e-6
    # Dynamic int8 takes its activation scale from the whole batch, so a frame's score depends on the frames
    # batched with it: only the order of magnitude can be checked on another batch.
    card = card_from_model_dir(out / "int8-dynamic")
    assert float(np.abs(card.factory(card, 1).score_frames(frames) - expected).max()) < 0.5


def test_bad_inputs_fail_in_one_line_and_leave_no_folder(tiny_run, tmp_path):
    import torch

    from gameqa.train.trainer import CHECKPOINT_FORMAT

    not_ckpt = tmp_path / "notes.pt"
    not_ckpt.write_text("not a checkpoint\n")
    tag_only = tmp_path / "tag-only.pt"
    torch.save({"format": CHECKPOINT_FORMAT}, tag_only)
    misfit = tmp_path / "misfit.pt"
    ckpt = torch.load(tiny_run["ckpt"], map_location="cpu", weights_only=False)
    torch.save({**ckpt, "model": {"head.weight": torch.zeros(1)}}, misfit)
    cases = [
        ([str(not_ckpt)], "cannot read checkpoint"),
        ([str(tag_only)], "not a complete ERAQUE checkpoint"),
        ([str(misfit)], "its weights do not fit its config's network"),
        ([str(tiny_run["ckpt"]), "--int8", "static"], "give --calibration MANIFEST"),
        ([str(tiny_run["ckpt"]), "--int8", "static", "--calibration", str(tmp_path / "nope.csv")],
         "calibration manifest not found"),
        ([str(tiny_run["ckpt"]), "--int8", "fp16"], "--int8 takes static or dynamic"),
        ([str(tiny_run["ckpt"]), "--name", "niqe"], "model name 'niqe' belongs to a built-in metric"),
        ([str(tiny_run["ckpt"]), "--name", "psnr", "--int8", "dynamic"], "model name 'psnr' belongs to a"),
        ([str(tiny_run["ckpt"]), "--name", " "], "the model name is empty"),
    ]
    for args, message in cases:
        out = tmp_path / "model"
        done = _export([*args, "--out", str(out)])
        assert done.exit_code == 2, done.output
        text = done.output.strip()
        assert message in text and len(text.splitlines()) == 1 and "Traceback" not in text, text
        assert not out.exists()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["misfit.pt", "notes.pt", "tag-only.pt"]  # no temporary folder left either

    # A manifest whose clips are missing: the error comes before anything is written.
    bad = tmp_path / "bad"
    (bad / "manifests").mkdir(parents=True)
    (bad / "manifests" / "corpus.csv").write_text(tiny_run["manifest"].read_text())
    done = _export([str(tiny_run["ckpt"]), "--out", str(tmp_path / "model"), "--int8", "static",
                    "--calibration", str(bad / "manifests" / "corpus.csv"), "--frames-cache", str(tmp_path / "fc")])
    assert done.exit_code == 2 and "is missing" in done.output and not (tmp_path / "model").exists()

    # An existing folder that is not a model folder is never replaced.
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    done = _export([str(tiny_run["ckpt"]), "--out", str(other)])
    assert done.exit_code == 2 and "is not an earlier model export (it holds keep.txt)" in done.output
    assert [p.name for p in other.iterdir()] == ["keep.txt"]


def test_reexport_replaces_an_earlier_model_folder(tiny_run, tmp_path):
    out = tmp_path / "m"
    assert _export([str(tiny_run["ckpt"]), "--out", str(out), "--int8", "dynamic"]).exit_code == 0
    assert (out / "int8-dynamic" / "model.json").is_file()
    done = _export([str(tiny_run["ckpt"]), "--out", str(out), "--name", "again"])
    assert done.exit_code == 0, done.output
    assert "max abs diff" in done.stdout and "model.onnx" in done.stdout  # the table of checks
    assert json.loads((out / "model.json").read_text())["name"] == "again"
    assert not (out / "int8-dynamic").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_reexport_never_deletes_the_checkpoint_or_other_files(tiny_run, tmp_path, monkeypatch):
    """--out is replaced as a whole: an earlier export holding the checkpoint, a file of the user's, or the current
    folder, is refused."""
    import shutil

    out = tmp_path / "m"
    assert _export([str(tiny_run["ckpt"]), "--out", str(out)]).exit_code == 0
    inside = out / "best.pt"
    shutil.copy(tiny_run["ckpt"], inside)
    done = _export([str(inside), "--out", str(out)])
    assert done.exit_code == 2 and f"holds {inside}, which replacing it would delete" in done.output and inside.is_file()
    inside.unlink()
    (out / "NOTES.md").write_text("mine")
    done = _export([str(tiny_run["ckpt"]), "--out", str(out)])
    assert done.exit_code == 2 and "is not an earlier model export (it holds NOTES.md)" in done.output
    assert (out / "NOTES.md").read_text() == "mine" and (out / "model.onnx").is_file()
    (out / "NOTES.md").unlink()
    monkeypatch.chdir(out)  # an earlier export that is the current folder stays too
    done = _export([str(tiny_run["ckpt"]), "--out", "."])
    assert done.exit_code == 2 and "holds the current folder" in done.output and (out / "model.onnx").is_file()
    monkeypatch.chdir(tmp_path)
    assert _export([str(tiny_run["ckpt"]), "--out", str(out)]).exit_code == 0
    assert oct(out.stat().st_mode & 0o777) == "0o755"  # a model folder is for everyone to read


def test_export_options_and_damaged_checkpoints_fail_in_one_line(tiny_run, tmp_path):
    import torch

    ckpt = torch.load(tiny_run["ckpt"], map_location="cpu", weights_only=False)
    ckpt.pop("step")
    torch.save(ckpt, tmp_path / "nostep.pt")
    ckpt["display_height"] = "abc"
    torch.save(ckpt, tmp_path / "baddisplay.pt")
    (tmp_path / "afile").write_text("x")
    out = str(tmp_path / "m")
    assert _export([str(tmp_path / "nostep.pt"), "--out", out]).exit_code == 0  # a step count is not needed
    cases = [([str(tiny_run["ckpt"]), "--out", out, "--crops", "0"], "--crops"),
             ([str(tiny_run["ckpt"]), "--out", out, "--crops", "-1"], "--crops"),
             ([str(tmp_path / "baddisplay.pt"), "--out", str(tmp_path / "m2")], "display_height is 'abc'"),
             ([str(tiny_run["ckpt"]), "--out", str(tmp_path / "afile" / "sub")], "cannot make the model folder")]
    for args, message in cases:
        done = _export(args)
        assert done.exit_code in (1, 2) and message in done.output and "Traceback" not in done.output, done.output
    assert not (tmp_path / "m2").exists()


def test_full_reference_model_exports_to_int8_with_reference_frames(corpus, tiny_run, tmp_path):  # noqa: F811
    from gameqa.export.formats import export_model
    from gameqa.models.registry import card_from_model_dir
    from gameqa.train.trainer import Trainer

    cfg = tiny_config(corpus, tmp_path / "w", ["model.reference=full", "train.max_steps=2", "name=tiny-fr"])
    ckpt = Trainer(cfg, log=quiet).fit().run_dir / "best.pt"
    summary = export_model(ckpt, tmp_path / "fr", int8=["static", "dynamic"], calibration_manifest=tiny_run["manifest"],
                           calibration_clips=2, calibration_frames=2, check_clips=1, bundled_frames=2,
                           frames_cache=tiny_run["frames"])
    checks = {c.file: c for c in summary.checks}
    assert checks["model.onnx"].max_abs_diff < 1e-4
    assert all(checks[f].max_abs_diff < 0.5 for f in ("int8/model.onnx", "int8-dynamic/model.onnx"))
    card = card_from_model_dir(tmp_path / "fr" / "int8")
    assert card.full_reference and card.name == "tiny-fr-int8"
    assert summary.calibration["frames"] == 4 and summary.check_frames["frames"] == 2 + 2


def _float_convs(path) -> tuple[list[str], list[str]]:
    """(Conv nodes fed by a DequantizeLinear weight, Conv nodes with a plain float weight), in graph order."""
    graph = onnx.load(str(path)).graph
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    return [n.name for n in convs if n.input[1] in dequantized], [n.name for n in convs if n.input[1] not in dequantized]


def _float_gemms(path) -> list[str]:
    """Gemm nodes whose weight is a plain float tensor (not fed by a DequantizeLinear)."""
    graph = onnx.load(str(path)).graph
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return [n.name for n in graph.node if n.op_type == "Gemm" and n.input[1] not in dequantized]


def test_static_int8_keeps_the_fine_layers_fp32_and_all_int8_on_request(exported, tiny_run, tmp_path):
    from gameqa.export.quantize import fine_stride_nodes

    out, summary = exported
    assert summary["calibration"]["fp32_stride"] == 8
    quantized, kept = _float_convs(out / "int8" / "model.onnx")
    fine = set(fine_stride_nodes(out / "model.onnx", 64, 8))
    assert kept and quantized  # mixed: the first layers fp32, the rest int8
    assert set(kept) <= fine and not set(quantized) & fine
    all_int8 = tmp_path / "all"
    done = _export([str(tiny_run["ckpt"]), "--out", str(all_int8), "--int8", "static", "--int8-fp32-stride", "0",
                    "--calibration", str(tiny_run["manifest"]), "--calibration-clips", "4", "--calibration-frames",
                    "2", "--check-clips", "0", "--frames-cache", str(tiny_run["frames"])])
    assert done.exit_code == 0, done.output
    quantized, kept = _float_convs(all_int8 / "int8" / "model.onnx")
    assert quantized and not kept
    head = tmp_path / "head"
    done = _export([str(tiny_run["ckpt"]), "--out", str(head), "--int8", "static", "--int8-fp32-stride", "0",
                    "--int8-fp32-head", "--calibration", str(tiny_run["manifest"]), "--calibration-clips", "4",
                    "--calibration-frames", "2", "--check-clips", "0", "--frames-cache", str(tiny_run["frames"])])
    assert done.exit_code == 0, done.output
    assert _float_gemms(all_int8 / "int8" / "model.onnx") == []  # the head's Gemms are int8 by default
    assert len(_float_gemms(head / "int8" / "model.onnx")) == 2  # and fp32 with --int8-fp32-head
    assert "pooling and head kept fp32" in json.loads((head / "int8" / "model.json").read_text())["description"]
    bad = _export([str(tiny_run["ckpt"]), "--out", str(tmp_path / "bad"), "--int8", "static", "--int8-fp32-stride",
                   "1", "--calibration", str(tiny_run["manifest"])])
    assert bad.exit_code != 0 and "--int8-fp32-stride" in bad.output and not (tmp_path / "bad").exists()


def test_export_with_texture_crops_writes_the_mode_and_matches_torch(tiny_run, tmp_path):
    out = tmp_path / "tex"
    done = _export([str(tiny_run["ckpt"]), "--out", str(out), "--crop-mode", "texture", "--json"])
    assert done.exit_code == 0, done.output
    spec = json.loads((out / "model.json").read_text())
    assert spec["input"]["crops"]["mode"] == "texture"
    summary = json.loads(done.stdout[done.stdout.index("{"):])
    assert summary["checks"][0]["max_abs_diff"] < 1e-4  # the engine's texture crops == torch's on real frames
    bad = _export([str(tiny_run["ckpt"]), "--out", str(tmp_path / "bad"), "--crop-mode", "random"])
    assert bad.exit_code != 0 and "crop mode" in bad.output and not (tmp_path / "bad").exists()
    assert "exporting" not in bad.output  # refused before any export work


def test_context_model_trains_exports_and_the_engine_feeds_it_the_frame_strip(corpus, tiny_run, tmp_path):  # noqa: F811
    """model.context_rows: each crop goes in with the whole frame squeezed under it. The strip really is the
    frame (a frame changed outside the crop changes the score, the crop alone does not), and every exported
    format gets the same input from the engine as torch does."""
    from gameqa.models.eraque import EraqueNet, normalise_crops
    from gameqa.models.onnx_engine import context_strip, crop_patches
    from gameqa.train.trainer import Trainer, copy_weights, load_checkpoint, model_from_checkpoint

    with pytest.raises(Exception, match="multiple of the backbone's stride"):
        EraqueNet("tiny", pretrained=False, context_rows=12)
    cfg = tiny_config(corpus, tmp_path / "w", ["train.max_steps=3", "name=tiny-context", "model.context_rows=16",
                                               f"model.init={tiny_run['ckpt']}"])
    result = Trainer(cfg, log=quiet).fit()
    model, _ = model_from_checkpoint(load_checkpoint(result.run_dir / "best.pt"))
    assert model.context_rows == 16 and model.context is not None
    # a context model started from a crop-only one reads the crop alone like it at first: the strip's map is zero
    source, _ = model_from_checkpoint(load_checkpoint(tiny_run["ckpt"]))
    start = EraqueNet("tiny", pretrained=False, context_rows=16, head_hidden=source.head[2].out_features).eval()
    copy_weights(start, source)
    assert float(start.context.weight.detach().abs().sum()) == 0.0
    for mine, theirs in zip(start.head.parameters(), source.head.parameters()):  # the crop-only model's head
        assert torch.equal(mine, theirs)
    strip_input = normalise_crops(crop_patches(np.full((72, 128, 3), 90, np.uint8), None, 32, 1, "grid", 16))
    with torch.no_grad():  # its score: the source's head on the crop's rows of the feature map, the strip adds nothing
        fmap = start.backbone(strip_input)[:, :, :-start.context_feature_rows]
        assert torch.equal(start(strip_input), source.head(start.pool(fmap)))
    # and after training the strip matters: same crop, different frame around it -> different score
    frame = np.random.default_rng(0).integers(0, 255, (72, 128, 3), dtype=np.uint8)
    other = frame.copy()
    other[:, 96:] = 255 - other[:, 96:]  # right of the centred crop (columns 48-79)
    (a,), (b,) = crop_patches(frame, None, 32, 1, "grid", 16), crop_patches(other, None, 32, 1, "grid", 16)
    assert a.shape == (48, 32, 3) and np.array_equal(a[:32], frame[20:52, 48:80]) and np.array_equal(a[:32], b[:32])
    assert np.array_equal(a[32:], context_strip(frame, 16, 32)) and not np.array_equal(a[32:], b[32:])
    with torch.no_grad():
        sa, sb = model(normalise_crops([a, b])).reshape(-1).tolist()
    assert sa != sb
    out = tmp_path / "ctx"
    done = _export([str(result.run_dir / "best.pt"), "--out", str(out), "--int8", "static", "--fixed-batch", "2",
                    "--torchscript", "--calibration", str(tiny_run["manifest"]), "--calibration-clips", "2",
                    "--calibration-frames", "1", "--check-clips", "2", "--frames-cache", str(tmp_path / "w" / "frames"),
                    "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads((out / "model.json").read_text())["input"]["crops"]["context"] == 16
    checks = {c["file"]: c for c in json.loads(done.stdout[done.stdout.index("{"):])["checks"]}
    for name in ("model.onnx", "model.b2.onnx", "model.torchscript.pt"):
        assert checks[name]["max_abs_diff"] < 1e-4, name
    assert checks["int8/model.onnx"]["max_abs_diff"] < 0.5


def test_an_error_inside_the_unfinished_export_names_the_checkpoint_not_the_temporary_folder(tmp_path):
    """A failing step of an export (a check against torch, a quantization) raises about a file in the export's
    temporary folder, which is deleted before the user reads the line: the line names the checkpoint, the file
    the step was on, and that nothing was written."""
    from gameqa.errors import ModelError
    from gameqa.export.formats import _naming_the_export
    from gameqa.export.quantize import quantize_dynamic_onnx

    tmp = tmp_path / ".m.tmp-x"
    (tmp / "int8-dynamic").mkdir(parents=True)
    (tmp / "model.onnx").write_bytes(b"not a graph")
    with pytest.raises(ModelError) as failed:  # a real failure of a real step
        quantize_dynamic_onnx(tmp / "model.onnx", tmp / "int8-dynamic" / "model.onnx")
    assert failed.value.path == str(tmp / "model.onnx")
    named = _naming_the_export(failed.value, tmp, tmp_path / "best.pt", tmp_path / "m")
    assert isinstance(named, ModelError) and named.path == str(tmp_path / "best.pt")
    assert str(named) == (f"{tmp_path / 'best.pt'}: model.onnx: {failed.value.problem}; "
                          f"nothing written to {tmp_path / 'm'}")
    other = ModelError(tmp_path / "frames" / "a.png", "unreadable")  # about another file: passes unchanged
    assert _naming_the_export(other, tmp, tmp_path / "best.pt", tmp_path / "m") is other
