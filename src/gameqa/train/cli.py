"""``gameqa train`` / ``eval`` / ``export`` for ERAQUE: a typer sub-app the main CLI mounts.

    gameqa train configs/eraque/default.toml train.epochs=3 model.backbone=tiny
    gameqa eval --model runs/eraque/best.pt --manifest corpus/manifests/corpus.csv --split test
    gameqa export runs/eraque/best.pt --out models/eraque

Under ``torchrun --nproc_per_node N -m gameqa.train.cli train CONFIG`` the same command trains on N processes.
User errors print one line and exit with status 2.
"""
from __future__ import annotations

import json
from typing import List, Optional

import typer

from gameqa.console import Table, console, counting_bar, fail, log_line
from gameqa.errors import GameQAError
from gameqa.sinks import json_safe

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Train, evaluate and export ERAQUE models.")
out = console()
err = console(stderr=True)


# help texts of the options `gameqa eval --model` passes on here
CROPS_HELP = ("Crops per frame (default: the model's own: a checkpoint's input.crops_per_frame, a model folder's "
              "model.json).")
CROP_MODE_HELP = ("grid, texture (the most detailed windows) or typical (windows of the frame's typical detail); "
                  "default: the model's own: a checkpoint's input.crop_mode, a model folder's model.json.")
CROP_SIZE_HELP = ("Crop side in pixels, a multiple of 32 (default: the model's own: a checkpoint's input.crop_size, "
                  "the training size, a model folder's model.json).")
BY_HELP = ("With --model. Also a table per value of this manifest column (codec, height, game, ...): clips, mean MOS, "
           "mean prediction, offset, SROCC inside. Repeatable.")
BY_CONTENT_HELP = ("Also per content (game session): mean MOS, mean prediction, offset, SROCC inside; and the SROCC "
                   "with each content's offset taken out (a diagnostic: it reads the labels).")


def _fail(message: str, code: int = 2) -> None:
    fail(message, code)


def _fit(config: str, overrides: Optional[List[str]], no_resume: bool, distill: bool) -> None:
    """Load the config, run the (distillation) trainer, print one JSON line per process."""
    try:
        from gameqa.train.config import load_config

        cfg = load_config(config, overrides or [])
        if distill:
            from gameqa.train.distill import DistillTrainer as trainer_class
        elif cfg.distill.teacher:
            raise GameQAError(config, "this config distils from a teacher (distill.teacher): run `gameqa distill`")
        else:
            from gameqa.train.trainer import Trainer as trainer_class
        trainer = trainer_class(cfg, resume=not no_resume, log=log_line)
        result = trainer.fit()
    except GameQAError as exc:
        _fail(str(exc))
    # One JSON line per process (under torchrun every rank prints its own): equal digests = identical weights.
    typer.echo(json.dumps({"run_dir": str(result.run_dir), "rank": trainer.dist.rank, "steps": result.steps,
                           "best_srocc": result.best_srocc, "best_step": result.best_step, "last_val": result.last_val,
                           "digest": result.digest, "seconds": round(result.seconds, 1)}))


RESUME = typer.Option(False, "--no-resume", help="Fail instead of resuming a run found in out_dir.")
OVERRIDES = typer.Argument(None, help="Settings to override: section.key=value ...")


@app.command("train")
def train_cmd(config: str = typer.Argument(..., help="TOML or YAML config (may `inherit` another)."),
              overrides: Optional[List[str]] = OVERRIDES, no_resume: bool = RESUME) -> None:
    """Train ERAQUE from a config; resumes the run in out_dir if one is there (same config required)."""
    _fit(config, overrides, no_resume, distill=False)


@app.command("distill")
def distill_cmd(config: str = typer.Argument(..., help="Student config whose distill section names the teacher "
                                             "(.pt, or an exported model)."),
                overrides: Optional[List[str]] = OVERRIDES, no_resume: bool = RESUME) -> None:
    """Train a student from a teacher: ground truth + soft targets + feature matching (gameqa.train.distill)."""
    _fit(config, overrides, no_resume, distill=True)


@app.command("eval")
def eval_cmd(
    model: str = typer.Option(..., "--model", "-m", help="Checkpoint (.pt), registered model name, or model folder."),
    manifest: str = typer.Option(..., "--manifest", help="Corpus manifest CSV."),
    split: str = typer.Option("test", "--split", help="train, val or test."),
    logo: Optional[str] = typer.Option(None, "--logo", help="Leave-one-game-out: this game is the test split."),
    root: Optional[str] = typer.Option(None, "--root", help="Corpus folder (default: the manifest's corpus)."),
    sample: Optional[str] = typer.Option(None, "--sample", "-s", help="Frame policy (default: the model's, else uniform:8)."),
    pooling: Optional[str] = typer.Option(None, "--pooling", help="Temporal pooling (default: the model's)."),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=0, help="Bootstrap resamples for the 95% intervals."),
    crops: Optional[int] = typer.Option(None, "--crops", help=CROPS_HELP),
    crop_mode: Optional[str] = typer.Option(None, "--crop-mode", help=CROP_MODE_HELP),
    crop_size: Optional[int] = typer.Option(None, "--crop-size", help=CROP_SIZE_HELP),
    by_content: bool = typer.Option(False, "--by-content", help=BY_CONTENT_HELP),
    by: Optional[List[str]] = typer.Option(None, "--by", help=BY_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (predictions included) instead of tables."),
) -> None:
    """Correlation of a model's clip scores with MOS on one split of a manifest."""
    from gameqa.evaluate import print_table
    from gameqa.evaluate.runs import manifest_groups, split_by, split_contents
    from gameqa.evaluate.table import content_rich_table
    from gameqa.train.evaluation import evaluate_split

    try:
        groups = manifest_groups(manifest, by) if by else {}
        with counting_bar(f"scoring the {split} split") as clips:
            ev = evaluate_split(model, manifest, split, root=root, logo_game=logo, sample=sample, pooling=pooling,
                                bootstrap=bootstrap, crops=crops, crop_mode=crop_mode, crop_size=crop_size,
                                progress=clips)
        contents = split_contents(ev.clip_ids, ev.predictions, ev.mos, manifest) if by_content else None
        grouped = split_by(ev.clip_ids, ev.predictions, ev.mos, groups)
    except GameQAError as exc:
        _fail(str(exc))
    if as_json:
        doc = {"clips": len(ev.clip_ids), "table": ev.table, "predictions": dict(zip(ev.clip_ids, ev.predictions))}
        doc = json.loads(json.dumps({**doc, **(contents or {}), **({"by": grouped} if grouped else {})},
                                    default=float))
        out.print_json(json.dumps(json_safe(doc), allow_nan=False))
        return
    reading = ", ".join(f"{what} {v}" for what, v in (("crops", crops), ("crop mode", crop_mode),
                                                      ("crop size", crop_size)) if v is not None)
    head = f"{model}{f' ({reading})' if reading else ''} on {split}"
    print_table(ev.table, title=f"{head} ({len(ev.clip_ids)} clips)", console=out)
    if contents:
        out.print(content_rich_table(contents["contents"], title=f"{head}: per content"))
        out.print(f"SROCC with each content's offset taken out: {contents['offset_free_srocc']:.4f} "
                  f"(diagnostic: it reads the labels)")
    for column, rows in grouped.items():
        out.print(content_rich_table(rows, title=f"{head}: per {column}", key=column))


@app.command("export")
def export_cmd(
    checkpoint: str = typer.Argument(..., help="Trainer checkpoint (best.pt)."),
    out_dir: str = typer.Option(..., "--out", "-o", help="Model folder to write (model.json + model.onnx, ...)."),
    name: Optional[str] = typer.Option(None, "--name", help="Registry name (default: the config's name)."),
    crops: Optional[int] = typer.Option(None, "--crops", min=1, help="Grid crops per frame at inference (default: the "
                                        "checkpoint's input.crops_per_frame)."),
    fixed_batch: Optional[int] = typer.Option(None, "--fixed-batch", help="Also write model.b<B>.onnx with a fixed "
                                              "B x C x crop x crop input (for on-device runtimes)."),
    torchscript: bool = typer.Option(False, "--torchscript", help="Also write model.torchscript.pt (traced)."),
    int8: Optional[List[str]] = typer.Option(None, "--int8", help="Int8 variants, each its own model folder: "
                                             "static (QDQ, calibrated; OUT/int8, name-int8) and/or dynamic "
                                             "(OUT/int8-dynamic, name-int8-dynamic). Repeat or comma-separate."),
    calibration: Optional[str] = typer.Option(None, "--calibration", help="Manifest whose train-split cached frames "
                                              "calibrate static int8 (and whose val split joins the checks)."),
    calibration_clips: int = typer.Option(16, "--calibration-clips", min=1, help="Train clips to calibrate on."),
    calibration_frames: int = typer.Option(4, "--calibration-frames", min=1, help="Frames per calibration/check clip."),
    check_clips: int = typer.Option(4, "--check-clips", min=0, help="Val-split clips of the manifest added to the checks."),
    crop_mode: Optional[str] = typer.Option(None, "--crop-mode", help="Where the engine puts the crops: grid (even "
                                            "grid), texture (the most detailed windows) or typical (windows "
                                            "of the frame's typical detail); default: the "
                                            "checkpoint's input.crop_mode."),
    int8_fp32_stride: int = typer.Option(8, "--int8-fp32-stride", help="Static int8 keeps fp32 the first layers, "
                                         "those finer than 1/N of the crop (they see the artefacts); 0: all int8."),
    int8_fp32_head: bool = typer.Option(False, "--int8-fp32-head", help="Static int8 also keeps the pooling and "
                                        "the head fp32 (every node outside the backbone)."),
    frames_cache: Optional[str] = typer.Option(None, "--frames-cache", help="Frame cache (default $GAMEQA_CACHE/frames)."),
    root: Optional[str] = typer.Option(None, "--root", help="Corpus folder (default: the manifest's corpus)."),
    as_json: bool = typer.Option(False, "--json", help="Print the checks as JSON instead of a table."),
) -> None:
    """Export a checkpoint to ONNX + model.json (and more formats), each file checked against torch on real frames."""

    try:
        from gameqa.export.formats import export_model

        kinds = [k.strip() for item in (int8 or []) for k in item.split(",") if k.strip()]
        summary = export_model(
            checkpoint, out_dir, name=name, fixed_batch=fixed_batch, torchscript=torchscript, int8=kinds,
            calibration_manifest=calibration, calibration_clips=calibration_clips,
            calibration_frames=calibration_frames, check_clips=check_clips, int8_fp32_stride=int8_fp32_stride,
            int8_fp32_head=int8_fp32_head,
            crop_mode=crop_mode,
            frames_cache=frames_cache, root=root, crops=crops, log=log_line)
    except GameQAError as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(json.dumps(summary.to_dict(), indent=2))
        return
    table = Table(title=f"vs torch: frame scores (1-5) on {summary.check_frames['frames']} real frames")
    for column, justify in [("file", "left"), ("format", "left"), ("registry name", "left"), ("MB", "right"),
                            ("max abs diff", "right"), ("mean abs diff", "right")]:
        table.add_column(column, justify=justify, no_wrap=True)
    for c in summary.checks:
        table.add_row(c.file, c.format, c.model_name or "-", f"{c.size_bytes / 1e6:.2f}", f"{c.max_abs_diff:.2e}",
                      f"{c.mean_abs_diff:.2e}")
    console(width=None if out.is_terminal else 140).print(table)
    out.print(f"wrote {summary.folder}", highlight=False)


@app.command("checkpoint-from-onnx")
def checkpoint_from_onnx_cmd(
    model: str = typer.Argument(..., help="An exported ERAQUE crop model: a registered name (eraque, "
                                "eraque-student) or a model folder."),
    out: str = typer.Option(..., "--out", "-o", help="Checkpoint file to write (.pt; never overwritten)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Rebuild a training checkpoint from an exported model, to start training from it (model.init).

    Int8 weights are dequantized and each folded BatchNorm is put back as a bias; the checkpoint is checked against
    the model's own engine on the bundled clip's frames."""
    try:
        from gameqa.export.reimport import check_against_onnx, checkpoint_from_onnx
        from gameqa.media.video import read_frames
        from gameqa.paths import bundled_clip

        summary = checkpoint_from_onnx(model, out)
        frames = [f.rgb for f in read_frames(bundled_clip(), "uniform:8")]
        summary["check"] = check_against_onnx(out, model, frames)
    except GameQAError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    check = summary["check"]
    typer.echo(f"wrote {summary['checkpoint']}: {summary['backbone']}, head {summary['head_hidden']}, "
               f"{summary['crops']} {summary['crop_mode']} crop(s) of {summary['crop_size']} px; "
               f"vs {model} on {check['frames']} frames of the bundled clip: max abs diff "
               f"{check['max_abs_diff']:.4f}, mean {check['mean_abs_diff']:.4f}")


@app.command("bench")
def bench_cmd(
    config: str = typer.Argument(..., help="Config whose backbone, crop and batch size to time."),
    overrides: Optional[List[str]] = typer.Argument(None, help="Settings to override: section.key=value ..."),
    steps: int = typer.Option(5, "--steps", min=1, help="Timed steps of each layout (after one warm-up step each)."),
    train_clips: int = typer.Option(1050, "--train-clips", help="Train clips for the projection."),
    val_clips: int = typer.Option(225, "--val-clips", help="Val clips for the projection."),
    lanes: int = typer.Option(0, "--lanes", min=0, help="Also time this many runs side by side (each on its "
                              "share of the cores) against one run on all of them, alternating (0: no)."),
    json_out: Optional[str] = typer.Option(None, "--json", help="Also write the figures to this JSON file."),
) -> None:
    """Seconds per training step on this CPU and the projected time of a full training run.

    The trainers' channels-last layout and the plain one, side by side in one run; with --lanes, steps per hour of
    several runs side by side against one."""

    try:
        from gameqa.train.config import load_config
        from gameqa.train.trainer import check_lanes, estimate_hours, measure_lanes, measure_step_seconds

        cfg = load_config(config, overrides or [])
        if lanes:
            check_lanes(lanes)
        timing = measure_step_seconds(cfg, steps)
        side_by_side = measure_lanes(cfg, lanes, steps) if lanes else None
    except GameQAError as exc:
        _fail(str(exc))
    projection = estimate_hours(cfg, train_clips, val_clips, timing["step_s_median"], timing["eval_s_per_crop"])
    table = Table(title=f"Training step: {cfg.model.backbone}, batch {cfg.train.batch_size} of "
                        f"{cfg.input.crop_size} px crops, {timing['threads']} thread(s), {steps} timed steps each, "
                        "alternating")
    for column in ("layout", "s / step (median)", "x channels-last"):
        table.add_column(column, justify="left" if column == "layout" else "right")
    table.add_row("channels-last (what the trainers use)", f"{timing['step_s_median']:.3f}", "1.00")
    table.add_row("contiguous (NCHW)", f"{timing['step_s_median_contiguous']:.3f}",
                  f"{timing['contiguous_over_channels_last']:.2f}")
    out.print(table)
    out.print(f"projected full run ({train_clips} train clips, {val_clips} val clips, {projection['steps']} steps): "
              f"{projection['total_h']:.2f} h (training {projection['train_h']:.2f} h, validation "
              f"{projection['validation_h']:.2f} h)", highlight=False)
    if side_by_side:
        s = side_by_side
        lanes_table = Table(title=f"Runs side by side on {s['cores']} cores: channels-last, {steps} timed steps "
                                  "per process, alternating, 2 rounds")
        for column in ("setting", "s / step (median)", "steps / h, all runs", "x one run"):
            lanes_table.add_column(column, justify="left" if column == "setting" else "right")
        lanes_table.add_row(f"one run, {s['one_run_threads']} thread(s)", f"{s['one_run_step_s']:.3f}",
                            f"{s['one_run_steps_per_h']:.0f}", "1.00")
        lanes_table.add_row(f"{s['lanes']} runs, {s['lane_threads']} thread(s) each", f"{s['lane_step_s']:.3f}",
                            f"{s['lanes_steps_per_h']:.0f}", f"{s['lanes_over_one_run']:.2f}")
        console(width=None if out.is_terminal else 140).print(lanes_table)
    if json_out:
        from gameqa.sinks import write_atomic

        write_atomic(json.dumps({
            "backbone": cfg.model.backbone, "crop": cfg.input.crop_size, "batch": cfg.train.batch_size,
            **{k: round(v, 6) for k, v in timing.items()}, **{k: round(v, 4) for k, v in projection.items()},
            **({"side_by_side": {k: round(v, 6) for k, v in side_by_side.items()}} if side_by_side else {})},
            indent=2) + "\n", json_out)


if __name__ == "__main__":
    app()
