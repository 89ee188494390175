"""Knowledge distillation (gameqa.train.distill) on the tiny real corpus of test_eraque: a tiny teacher, a tiny
student, unlabelled frames, resume, switching the terms off, export, and the errors."""
from __future__ import annotations

import csv
import io

import pytest

torch = pytest.importorskip("torch")

from test_eraque import corpus, quiet, tiny_config  # noqa: E402,F401  (corpus is a fixture)

from gameqa.errors import ConfigError  # noqa: E402


@pytest.fixture(scope="module")
def teacher(corpus, tmp_path_factory):  # noqa: F811
    from gameqa.train.trainer import Trainer

    work = tmp_path_factory.mktemp("teacher")
    cfg = tiny_config(corpus, work / "t", ["train.max_steps=3", "name=teacher", "model.head_hidden=8"])
    return Trainer(cfg, log=quiet).fit().run_dir / "best.pt"


def student(corpus, work, teacher, *more):  # noqa: F811
    return tiny_config(corpus, work, [f'distill.teacher="{teacher}"', "name=student", *more])


def test_distance_terms_by_hand():
    from gameqa.train.distill import feature_distance, output_distance

    s, t = torch.tensor([1.0, 2.0, 4.0]), torch.tensor([1.5, 2.0, 3.0])
    assert float(output_distance(s, t, "l1")) == pytest.approx(0.5)
    assert float(output_distance(s, t, "l2")) == pytest.approx((0.25 + 1.0) / 3)
    tmap = torch.full((1, 2, 2, 2), 2.0)
    smap = torch.full((1, 2, 4, 4), 1.0)  # pooled to 2x2 first
    assert float(feature_distance(smap, tmap)) == pytest.approx(1.0 / 4.0)
    assert float(feature_distance(tmap.clone(), tmap)) == 0.0


def test_distillation_trains_logs_resumes_and_exports(corpus, teacher, tmp_path):  # noqa: F811
    from gameqa.export.onnx import export_onnx
    from gameqa.train.distill import DistillTrainer

    more = ["distill.unlabelled_clips=2", 'distill.unlabelled_sample="uniform:2"', "distill.unlabelled_per_batch=2"]
    straight = DistillTrainer(student(corpus, tmp_path / "a", teacher, "train.max_steps=4", *more), log=quiet)
    result = straight.fit()
    assert result.steps == 4 and len(straight.unlabelled) == 2 and all(len(f) == 2 for f in straight.unlabelled)
    x, y = straight.load_batch(straight.epoch_plan(0), 0, 0)
    assert x.shape[0] == 6 and int(torch.isnan(y).sum()) == 2  # 4 labelled crops + 2 unlabelled
    rows = list(csv.DictReader(io.StringIO((result.run_dir / "metrics.csv").read_text())))
    train_rows = [r for r in rows if r["train_loss"]]
    assert len(train_rows) == 4
    assert all(float(r["distill_output"]) > 0 and float(r["distill_feature"]) > 0 for r in train_rows)
    ckpt = torch.load(result.run_dir / "last.pt", map_location="cpu", weights_only=False)
    assert "adapter" in ckpt and ckpt["teacher"] == str(teacher)

    DistillTrainer(student(corpus, tmp_path / "b", teacher, "train.max_steps=2", *more), log=quiet).fit()
    resumed = DistillTrainer(student(corpus, tmp_path / "b", teacher, "train.max_steps=4", *more), log=quiet).fit()
    assert resumed.digest == result.digest  # adapter and optimiser state come back: bit-identical

    report = export_onnx(result.run_dir / "best.pt", tmp_path / "model", name="student-test")
    assert report.max_abs_diff < 1e-4  # the exported student is the plain network, no adapter


def test_unlabelled_frames_from_another_manifest_leave_out_held_out_contents(corpus, teacher, tmp_path):  # noqa: F811
    from gameqa.data.manifest import read_manifest, write_manifest
    from gameqa.train.distill import DistillTrainer

    rows = read_manifest(corpus / "manifests" / "corpus.csv")
    more = ["distill.unlabelled_clips=50", 'distill.unlabelled_sample="uniform:2"', "distill.unlabelled_per_batch=2",
            f'distill.unlabelled_manifest="{corpus / "manifests" / "corpus.csv"}"']
    trainer = DistillTrainer(student(corpus, tmp_path / "u", teacher, "train.max_steps=1", *more), log=quiet)
    trainer.fit()
    train_ids = {r["clip_id"] for r in rows if r["split"] == "train"}
    assert set(trainer.unlabelled_ids) == train_ids  # every clip of a train content, none of val or test
    held = [r for r in rows if r["split"] != "train"]
    write_manifest(held, tmp_path / "held" / "manifests" / "held.csv")
    (tmp_path / "held" / "clips").symlink_to(corpus / "clips")
    with pytest.raises(ConfigError, match="every clip is of a val or test content"):
        DistillTrainer(student(corpus, tmp_path / "h", teacher, *more[:3],
                               f'distill.unlabelled_manifest="{tmp_path / "held" / "manifests" / "held.csv"}"'),
                       log=quiet)
    with pytest.raises(ConfigError, match="manifest not found"):
        DistillTrainer(student(corpus, tmp_path / "n", teacher, *more[:3],
                               f'distill.unlabelled_manifest="{tmp_path / "nope.csv"}"'), log=quiet)
    assert not (tmp_path / "h").exists() and not (tmp_path / "n").exists()  # refused before any folder


def test_whole_frame_teacher_targets_are_the_teachers_own_reading_and_are_kept(corpus, teacher, tmp_path):  # noqa: F811
    import json

    from gameqa.models.eraque import normalise_crops
    from gameqa.train.distill import DistillTrainer
    from gameqa.models.onnx_engine import choose_boxes
    from gameqa.train.trainer import load_checkpoint, model_from_checkpoint

    more = ["distill.output_target=frame", "distill.unlabelled_clips=2", 'distill.unlabelled_sample="uniform:2"',
            "distill.unlabelled_per_batch=2", "train.max_steps=2"]
    work = tmp_path / "w"
    trainer = DistillTrainer(student(corpus, work / "a", teacher, *more), log=quiet)
    result = trainer.fit()
    entries = [c.frames for c in trainer.clips["train"]] + list(trainer.unlabelled)
    assert {e.key for e in entries} == set(trainer.frame_targets)
    net, tcfg = model_from_checkpoint(load_checkpoint(teacher))
    net.eval()
    t = tcfg.input
    for entry in (entries[0], entries[-1]):  # a labelled clip and an unlabelled one, by hand: mean over its crops
        for i in range(len(entry)):
            frame = entry.load(i)
            crops = [frame[y:y + t.crop_size, x:x + t.crop_size]
                     for y, x in choose_boxes(frame, t.crop_size, t.crops_per_frame, t.crop_mode)]
            with torch.no_grad():
                want = float(net(normalise_crops(crops)).mean())
            assert trainer.frame_targets[entry.key][i] == pytest.approx(min(5.0, max(1.0, want)), abs=1e-5)

    plan = trainer.epoch_plan(0)
    x, y = trainer.load_batch(plan, 0, 0)
    assert x.shape[0] == 6 and y.shape == (6, 2) and int(torch.isnan(y[:, 0]).sum()) == 2
    train = trainer.clips["train"]
    assert y[:4, 1].tolist() == pytest.approx([trainer.frame_targets[train[ci].frames.key][fi] for ci, fi in plan[:4]])
    assert not torch.isnan(y[:, 1]).any()
    rows = list(csv.DictReader(io.StringIO((result.run_dir / "metrics.csv").read_text())))
    assert all(float(r["distill_output"]) > 0 for r in rows if r["train_loss"])

    stores = list((work / "frames" / "teacher-scores").glob("*.json"))  # kept beside the frame cache
    assert len(stores) == 1
    kept = json.loads(stores[0].read_text())
    key = entries[0].key
    kept[key][0] = 4.25  # a second run reads the scores kept, it does not score the frames again
    stores[0].write_text(json.dumps(kept))
    again = DistillTrainer(student(corpus, work / "b", teacher, *more), log=quiet)
    again.fit()
    assert again.frame_targets[key][0] == 4.25


def test_an_exported_teacher_gives_the_whole_frame_targets_its_engine_reads(corpus, teacher, tmp_path):  # noqa: F811
    from gameqa.export.onnx import export_onnx
    from gameqa.models.registry import create_model
    from gameqa.train.distill import DistillTrainer

    folder = tmp_path / "teacher-onnx"
    export_onnx(teacher, folder, name="teacher-onnx-test")
    frame = ["distill.output_target=frame", "distill.feature_weight=0", "distill.unlabelled_clips=2",
             'distill.unlabelled_sample="uniform:2"', "distill.unlabelled_per_batch=2", "train.max_steps=2"]
    trainer = DistillTrainer(student(corpus, tmp_path / "w", folder, *frame), log=quiet)
    trainer.fit()
    assert trainer.teacher is None  # no torch teacher in memory: every target came from the ONNX file
    engine = create_model(str(folder))
    entries = [c.frames for c in trainer.clips["train"]] + list(trainer.unlabelled)
    for entry in (entries[0], entries[-1]):  # exactly what `gameqa score` reads in those frames
        want = engine.score_frames([entry.load(i) for i in range(len(entry))])
        assert trainer.frame_targets[entry.key] == pytest.approx(list(want), abs=1e-5)
    net_targets = DistillTrainer(student(corpus, tmp_path / "t", teacher, *frame), log=quiet)
    net_targets.fit()  # the same teacher as a checkpoint reads the same frames alike (export matches torch)
    assert net_targets.frame_targets[entries[0].key] == pytest.approx(trainer.frame_targets[entries[0].key], abs=1e-3)

    for wrong in (["distill.feature_weight=1"], ['distill.output_target="crop"'], ["distill.output_weight=0"]):
        with pytest.raises(ConfigError, match="an exported teacher gives whole-frame scores only"):
            DistillTrainer(student(corpus, tmp_path / "x", folder, *frame, *wrong), log=quiet)
    with pytest.raises(ConfigError, match="teacher not found"):
        DistillTrainer(student(corpus, tmp_path / "x", tmp_path / "no-such-model", *frame), log=quiet)
    assert not (tmp_path / "x").exists()


def test_all_distillation_terms_off_is_the_plain_trainer(corpus, teacher, tmp_path):  # noqa: F811
    from gameqa.train.distill import DistillTrainer
    from gameqa.train.trainer import Trainer

    off = ["train.max_steps=3", "distill.output_weight=0", "distill.feature_weight=0"]
    distilled = DistillTrainer(student(corpus, tmp_path / "d", teacher, *off), log=quiet).fit()
    plain = Trainer(tiny_config(corpus, tmp_path / "p", ["train.max_steps=3", "name=student"]), log=quiet).fit()
    assert distilled.digest == plain.digest
    on = DistillTrainer(student(corpus, tmp_path / "o", teacher, "train.max_steps=3"), log=quiet).fit()
    assert on.digest != plain.digest  # and the terms, when on, change what is learnt


def test_distillation_errors_before_training(corpus, teacher, tmp_path):  # noqa: F811
    from typer.testing import CliRunner

    from gameqa.cli import app
    from gameqa.train.distill import DistillTrainer

    with pytest.raises(ConfigError, match="distill.teacher is empty"):
        DistillTrainer(tiny_config(corpus, tmp_path / "x"), log=quiet)
    with pytest.raises(ConfigError, match="teacher checkpoint not found"):
        DistillTrainer(student(corpus, tmp_path / "x", tmp_path / "nope.pt"), log=quiet)
    with pytest.raises(ConfigError, match="must see the same input"):
        DistillTrainer(student(corpus, tmp_path / "x", teacher, "model.reference=full"), log=quiet)
    with pytest.raises(ConfigError, match="unknown key 'distill.temperature'"):
        student(corpus, tmp_path / "x", teacher, "distill.temperature=2")
    cfg = tmp_path / "s.toml"
    cfg.write_text(f'[distill]\nteacher = "{teacher}"\n')
    done = CliRunner().invoke(app, ["train", str(cfg)])
    assert done.exit_code == 2 and "run `gameqa distill`" in done.output
    assert not (tmp_path / "x").exists()


def test_bench_runs_compares_groups_and_keeps_predictions(corpus, teacher, tmp_path):  # noqa: F811
    import json

    import numpy as np

    from typer.testing import CliRunner

    from gameqa.cli import app

    manifest = corpus / "manifests" / "corpus.csv"
    run = teacher.parent
    args = ["bench", "runs", "--group", f"teacher={run}", "--group", f"again={run.parent}/r*",
            "--manifest", str(manifest), "--split", "test", "--json", str(tmp_path / "runs.json")]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    result = json.loads((tmp_path / "runs.json").read_text())
    assert set(result) == {"teacher", "again"} and result["teacher"]["clips"] == 3
    assert result["teacher"]["mean"].keys() >= {"within-source", "between-source"}  # the manifest names sources
    assert json.dumps(result["teacher"]["mean"]) == json.dumps(result["again"]["mean"])  # same run, cached (NaN too)
    saved = json.loads((run / "predictions-test.json").read_text())
    assert len(saved["predictions"]) == 3 and all(1 <= p <= 5 for p in saved["predictions"])
    bad = CliRunner().invoke(app, ["bench", "runs", "--group", f"x={tmp_path}/none*", "--manifest", str(manifest)])
    assert bad.exit_code == 1 and "matches no run folder" in bad.output
    # per content: the cached predictions, one row per content with its offset, and a plot
    png = tmp_path / "contents.png"
    done = CliRunner().invoke(app, args[:6] + ["--manifest", str(manifest), "--by-content", "--plot", str(png),
                                               "--json", str(tmp_path / "c.json")])
    assert done.exit_code == 0, done.output
    rows = json.loads((tmp_path / "c.json").read_text())["teacher"]["contents"]
    assert sum(r["clips"] for r in rows) == 3 and "teacher: per content" in done.output
    for r in rows:
        assert r["offset"] == pytest.approx(r["prediction"] - r["mos"]) and r["content"] in done.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the pristine sources: the same scores as evaluating the sources themselves as clips
    from gameqa.data.manifest import read_manifest, write_manifest
    from gameqa.train.evaluation import evaluate_split

    done = CliRunner().invoke(app, args[:6] + ["--manifest", str(manifest), "--by-content", "--pristine",
                                               "--json", str(tmp_path / "p.json")])
    assert done.exit_code == 0, done.output
    assert "pristine source" in done.output and (run / "pristine-test.json").is_file()
    rows = json.loads((tmp_path / "p.json").read_text())["teacher"]["contents"]
    tests = [r for r in read_manifest(manifest) if r["split"] == "test"]
    as_clips = {(r["source_id"], k): {**r, "clip_id": f"{r['source_id']}-{k}", "path": r["source_path"]}
                for r in tests for k in "ab"}  # each twice: a correlation needs two clips
    write_manifest(as_clips.values(), tmp_path / "sources-as-clips.csv")
    direct = evaluate_split(str(teacher), tmp_path / "sources-as-clips.csv", "test", root=str(corpus), bootstrap=0)
    assert len(direct.predictions) >= 1 and len(rows) == 1  # the tiny corpus names no contents: one row
    assert rows[0]["pristine"] == pytest.approx(float(np.mean(direct.predictions)), abs=1e-9)
    for extra, message in ((["--pristine"], "add --by-content"),
                           (["--plot", str(tmp_path / "p.png")], "add --by-content"),
                           (["--by-content", "--plot", str(tmp_path / "p.jpg")], "name it .png"),
                           (["--by-content", "--plot", str(tmp_path / "no" / "p.png")], "does not exist")):
        bad = CliRunner().invoke(app, args[:6] + ["--manifest", str(manifest)] + extra)
        assert bad.exit_code == 1 and message in bad.output and not (tmp_path / "p.png").exists()


def test_init_from_teacher_copies_the_shared_backbone(corpus, teacher, tmp_path):  # noqa: F811
    from gameqa.train.distill import DistillTrainer
    from gameqa.train.trainer import copy_weights
    from gameqa.train.trainer import load_checkpoint, model_from_checkpoint

    trainer = DistillTrainer(student(corpus, tmp_path / "i", teacher, "train.max_steps=1",
                                     "distill.init_from_teacher=true"), log=quiet)
    trainer._cache()
    model, _ = trainer._build()
    source, _ = model_from_checkpoint(load_checkpoint(teacher))
    for key, value in source.state_dict().items():
        if key.startswith("backbone."):
            assert torch.equal(model.state_dict()[key], value), key
    assert model.head[2].weight.shape != source.head[2].weight.shape  # another head width: the head starts new
    same = DistillTrainer(student(corpus, tmp_path / "j", teacher, "train.max_steps=1", "model.head_hidden=8",
                                  "distill.init_from_teacher=true"), log=quiet)
    same._cache()
    twin, _ = same._build()
    for key, value in source.state_dict().items():  # the same network: it starts as the teacher, head included
        assert torch.equal(twin.state_dict()[key], value), key
    other = torch.nn.Sequential(torch.nn.Linear(3, 3))
    with pytest.raises(ConfigError, match="shares no layer"):
        copy_weights(other, source)


def test_unlabelled_frames_leave_the_held_out_game_out_entirely(corpus):  # noqa: F811
    """Leaving a game out, none of its clips (its soft and JPEG-blocked variants neither) may be an unlabelled
    frame: they are not val or test rows of the split, so the content filter alone would let them in."""
    from gameqa.train.distill import unlabelled_rows

    manifest = corpus / "manifests" / "corpus.csv"
    every = unlabelled_rows(manifest, [])
    assert {r["game"] for r in every} == {"game_a", "game_b"}
    held = unlabelled_rows(manifest, [], logo_game="game_b")
    assert held and {r["game"] for r in held} == {"game_a"}


def test_a_pruned_copy_of_the_teacher_learns_block_by_block_and_exports(corpus, tmp_path):  # noqa: F811
    """An EfficientNet-Lite0 teacher and its pruned copy (efficientnet-lite0-p0.25): the student starts from the
    teacher's channels that vary most on train crops, the block term feeds each student block what the teacher's
    was fed (zero for blocks the pruning left whole), it trains, logs and exports; a student whose blocks do not
    match is told before training."""
    pytest.importorskip("efficientnet_lite_pytorch")
    from gameqa.export.onnx import export_onnx
    from gameqa.train.distill import DistillTrainer
    from gameqa.train.trainer import Trainer

    lite = ["model.backbone=efficientnet-lite0", "model.pretrained=true", "model.head_hidden=8", "model.dropout=0.0"]
    teacher = Trainer(tiny_config(corpus, tmp_path / "t", ["train.max_steps=2", "name=teacher", *lite]),
                      log=quiet).fit().run_dir / "best.pt"
    pruned = ["model.backbone=efficientnet-lite0-p0.25", "model.pretrained=false", "model.head_hidden=8",
              "distill.init_from_teacher=true", "distill.block_weight=1.0", "distill.feature_weight=0.0"]
    trainer = DistillTrainer(student(corpus, tmp_path / "s", teacher, "train.max_steps=3", *pruned), log=quiet)
    trainer._cache()
    model, _ = trainer._build()
    model.eval()
    x = trainer._calibration_crops(4)
    with torch.no_grad():
        trainer.teacher(x)
        terms = {k: float(torch.nn.functional.mse_loss(trainer._student_blocks[k](given), wanted))
                 for k, (given, wanted) in trainer._teacher_blocks.items()}
        assert terms[0] == 0.0  # the first block has no expansion: pruned copy = the teacher's block
        assert all(terms[k] > 0 for k in range(1, 16)) and float(trainer.block_distance()) > 0
    result = trainer.fit()
    rows = list(csv.DictReader(io.StringIO((result.run_dir / "metrics.csv").read_text())))
    assert [float(r["distill_blocks"]) > 0 for r in rows if r["train_loss"]] == [True] * 3
    report = export_onnx(result.run_dir / "last.pt", tmp_path / "model", name="pruned-test")
    assert report.max_abs_diff < 1e-4

    with pytest.raises(ConfigError, match="block_weight needs a student whose backbone blocks"):
        DistillTrainer(student(corpus, tmp_path / "m", teacher, "train.max_steps=1", "distill.block_weight=1.0",
                               "model.backbone=mobilenetv2-0.5"), log=quiet).fit()
    assert not (tmp_path / "m" / "run").exists()


def test_block_term_under_torchrun_two_processes_agree(corpus, tmp_path):  # noqa: F811
    """The pruned student's block term (student blocks called outside DDP's forward) under torchrun with 2 CPU
    processes (gloo): it trains, both ranks end with the same weights, and the block term was logged."""
    pytest.importorskip("efficientnet_lite_pytorch")
    from test_eraque import _to_toml, torchrun_two
    from tinycorpus import tiny_tree

    from gameqa.train.trainer import Trainer

    lite = ["model.backbone=efficientnet-lite0", "model.pretrained=true", "model.head_hidden=8", "model.dropout=0.0"]
    teacher = Trainer(tiny_config(corpus, tmp_path / "t", ["train.max_steps=1", "name=teacher", *lite]),
                      log=quiet).fit().run_dir / "best.pt"
    tree = tiny_tree(corpus, tmp_path / "s", train={"max_steps": 2, "threads": 1})
    tree["model"].update({"backbone": "efficientnet-lite0-p0.25", "pretrained": False, "head_hidden": 8,
                          "dropout": 0.0})
    tree["distill"] = {"teacher": str(teacher), "init_from_teacher": True, "block_weight": 1.0,
                       "feature_weight": 0.0}
    config = tmp_path / "ddp-pruned.toml"
    config.write_text(_to_toml(tree))
    results = torchrun_two("distill", config, timeout=300)
    assert results[0]["steps"] == 2
    assert results[0]["digest"] == results[1]["digest"]
    rows = list(csv.DictReader(io.StringIO((tmp_path / "s" / "run" / "metrics.csv").read_text())))
    assert [float(r["distill_blocks"]) > 0 for r in rows if r["train_loss"]] == [True, True]


def test_frame_view_is_the_inference_crops_moved_a_little_and_mirrored_together():
    import numpy as np

    from gameqa.models.onnx_engine import choose_boxes
    from gameqa.train.trainer import frame_view

    h, w, size = 96, 160, 32
    yy, xx = np.mgrid[:h, :w]
    frame = np.stack([yy, xx, np.zeros_like(yy)], axis=-1).astype(np.uint8)  # each pixel says where it is
    boxes = choose_boxes(frame, size, 4, "grid")
    flipped = 0
    for seed in range(30):
        crops = frame_view(frame, None, size, 4, "grid", np.random.default_rng(seed), True)
        assert len(crops) == 4 and all(c.shape == (size, size, 3) for c in crops)
        mirrored = [int(c[0, 0, 1]) > int(c[0, -1, 1]) for c in crops]
        assert len(set(mirrored)) == 1  # the whole frame is mirrored, or none of it
        flipped += mirrored[0]
        for crop, (y, x), m in zip(crops, boxes, mirrored):
            top, left = int(crop[0, 0, 0]), int(crop[0, -1 if m else 0, 1])
            assert abs(top - y) <= size // 8 and abs(left - x) <= size // 8  # its grid box, moved at most 1/8
    assert 5 < flipped < 25
    still = frame_view(frame, None, size, 4, "grid", np.random.default_rng(0), False)
    assert all(int(c[0, 0, 1]) < int(c[0, -1, 1]) for c in still)


def test_frame_samples_are_scored_by_the_mean_of_their_crops(corpus, teacher, tmp_path):  # noqa: F811
    """train_crops = "frame": a sample is the inference view (crops_per_frame crops), its score the mean of theirs,
    for the labelled frames, the unlabelled ones and the teacher's crop targets alike."""
    from gameqa.train.distill import DistillTrainer, output_distance

    more = ['input.train_crops="frame"', "distill.unlabelled_clips=2", 'distill.unlabelled_sample="uniform:2"',
            "distill.unlabelled_per_batch=2", "distill.feature_weight=0", "train.max_steps=2"]
    trainer = DistillTrainer(student(corpus, tmp_path / "a", teacher, *more), log=quiet)
    result = trainer.fit()
    assert trainer.view_crops == 2
    x, y = trainer.load_batch(trainer.epoch_plan(0), 0, 0)
    assert x.shape[0] == (4 + 2) * 2 and y.shape == (6,) and int(torch.isnan(y).sum()) == 2
    from gameqa.train.trainer import load_checkpoint, model_from_checkpoint

    model, _ = model_from_checkpoint(load_checkpoint(result.run_dir / "last.pt"))
    model.eval()
    parts = trainer.step_loss(model, x, y)
    with torch.no_grad():
        mine = model(x).reshape(6, 2).mean(dim=1)
        theirs = trainer.teacher(x).reshape(6, 2).mean(dim=1)
    want = float(output_distance(mine, theirs, "l1"))
    assert trainer.extra_log["distill_output"] == pytest.approx(want, rel=1e-5)
    assert float(parts.regression) == pytest.approx(float((mine[:4] - y[:4]).abs().mean()), rel=1e-5)
