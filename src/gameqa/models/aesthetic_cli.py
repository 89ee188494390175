"""Command-line commands of the mean-and-spread models: ``aesthetics``, ``train-aesthetic``, ``eval-aesthetic``.

Mount them on the main app with :func:`register` (``register(app)``). Scoring (``aesthetics``) needs only
onnxruntime; training and evaluation import torch lazily.
"""
from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path
from typing import List, Optional

import typer

from gameqa.console import Table, console, exit_on_failures, fail as _fail, log_line
from gameqa.errors import GameQAError

DEFAULT_MODEL = "clive-quality-spread"
out = console()
err = console(stderr=True)


def aesthetics(
    paths: List[str] = typer.Argument(..., help="Image files, folders, globs, or list files (.txt / @FILE)."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Bundled mean-and-spread model name or model folder."),
    raters: Optional[int] = typer.Option(None, "--raters", help="Panel size for the 95% interval of the mean (default: the model's)."),
    output: str = typer.Option("table", "--output", "-o", help="table, json or csv."),
    threads: int = typer.Option(1, "--threads", min=1, help="Threads for onnxruntime."),
) -> None:
    """Predict each image's mean opinion score, the raters' std and a 95% interval."""
    from gameqa.models.aesthetic_onnx import SpreadScorer
    from gameqa.media import is_video
    from gameqa.scoring import collect_inputs

    if output not in ("table", "json", "csv"):
        _fail(f"--output must be table, json or csv, not {output!r}", 2)
    try:
        scorer = SpreadScorer(model, threads=threads, raters=raters)
    except GameQAError as exc:
        _fail(str(exc), 2)
    files, input_errors = collect_inputs(paths, only="image")  # a folder gives its images
    failures = [str(e) for e in input_errors]
    results = []
    for f in files:
        try:
            results.append(scorer.score(f))
        except GameQAError as exc:
            failures.append(f"{f}: a video; `gameqa aesthetics` scores images (`gameqa score` takes videos)"
                            if is_video(f) else str(exc))
    card = scorer.card
    if output == "json":
        out.print_json(json.dumps({"model": card.name, "scale": list(card.scale), "results": [r.to_dict() for r in results]}))
    elif output == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")  # quotes a path with a comma or a quote
        writer.writerow(list(results[0].to_dict()) if results else ["path"])
        for r in results:
            writer.writerow([f"{v:.4f}" if isinstance(v, float) else v for v in r.to_dict().values()])
    elif results:
        table = Table(title=f"{card.name} v{card.version} (scale {card.scale[0]:g}-{card.scale[1]:g}, higher is better)")
        for col in ("file", "mean", "std", f"95% CI of mean (n={scorer.raters})", "95% of raters"):
            table.add_column(col, overflow="fold")
        for r in results:
            table.add_row(Path(r.path).name, f"{r.mean:.2f}", f"{r.std:.2f}", f"{r.ci_low:.2f} - {r.ci_high:.2f}",
                          f"{r.raters_low:.1f} - {r.raters_high:.1f}")
        out.print(table)
    exit_on_failures(failures, len(files) + len(input_errors))


def train_aesthetic(
    config: str = typer.Argument(..., help="A TOML config (configs/aesthetic/*.toml)."),
    out_dir: str = typer.Option(..., "--out", help="Folder for model.onnx + model.json."),
    overrides: List[str] = typer.Option([], "--set", help="Override a config key: section.key=value (repeatable)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the final training run."),
    int8: bool = typer.Option(False, "--int8", help="Also write OUT/int8: static int8, first layers, pooling and "
                                                    "heads fp32, calibrated on 48 of the images."),
) -> None:
    """Train a mean-and-spread model on every rated image and export it as an ONNX model folder."""
    from gameqa.train.aesthetic import load_config, train_final

    try:
        cfg = load_config(config, overrides)
        train_final(cfg, out_dir, log=log_line, seed=seed, int8=int8)
    except GameQAError as exc:
        _fail(str(exc), 2)


def _fmt(value: tuple[float, float] | None, digits: int = 3) -> str:
    if value is None or math.isnan(value[0]):
        return "-"
    return f"{value[0]:.{digits}f} ± {value[1]:.{digits}f}"


def eval_aesthetic(
    config: str = typer.Argument(..., help="A TOML config (configs/aesthetic/*.toml)."),
    overrides: List[str] = typer.Option([], "--set", help="Override a config key: section.key=value (repeatable)."),
    seeds: Optional[int] = typer.Option(None, "--seeds", min=1, help="Random 80/20 splits (default: the config's)."),
    rank: Optional[str] = typer.Option(None, "--rank", help="Compare ranking losses, e.g. ci,plain (default: the config's)."),
    json_out: Optional[str] = typer.Option(None, "--json", help="Write every seed's numbers to this JSON file."),
    validation: bool = typer.Option(False, "--validation",
                                    help="Score a validation part carved from each training split (never the test part)."),
) -> None:
    """Repeated random 80/20 splits: mean and std agreement, baselines, binary accuracy, ordered pairs."""
    from gameqa.train.aesthetic import load_config, run_protocol, summarise

    from gameqa.sinks import write_atomic

    log = log_line
    variants = None if rank is None else [r.strip() for r in rank.split(",") if r.strip()]
    if variants is not None and not variants:
        _fail(f"--rank {rank!r} names no ranking loss (e.g. ci,plain)", 2)
    if json_out and not Path(json_out).resolve().parent.is_dir():
        _fail(f"{json_out}: folder {Path(json_out).resolve().parent} does not exist", 2)
    try:
        base = load_config(config, overrides)
        variants = variants or [base.loss.rank]
        everything = {}
        for variant in variants:
            cfg = load_config(config, [*overrides, f'loss.rank="{variant}"'])
            log(f"== {cfg.name}: rank loss {variant}")
            everything[variant] = run_protocol(cfg, seeds, log, validation=validation)
    except GameQAError as exc:
        _fail(str(exc), 2)
    summaries = {v: summarise(r) for v, r in everything.items()}
    n_seeds = len(next(iter(everything.values())))
    part = "validation parts of " if validation else ""
    table = Table(title=f"{base.name}: {part}{n_seeds} random {1 - base.train.test_fraction:.0%}/{base.train.test_fraction:.0%} "
                        "splits, mean ± sd over seeds")
    table.add_column("measure")
    for v in summaries:
        table.add_column(f"rank={v}")
    for key in next(iter(summaries.values())):
        table.add_row(key, *(_fmt(s.get(key), 1 if key == "sure_pairs" else 3) for s in summaries.values()))
    out.print(table)
    if json_out:
        record = {"config": base.model_dump(), "validation": validation, "reports": everything}
        try:
            write_atomic(json.dumps(record, indent=1) + "\n", json_out)
        except GameQAError as exc:
            _fail(str(exc))


def register(app: typer.Typer) -> None:
    """Add ``aesthetics``, ``train-aesthetic`` and ``eval-aesthetic`` to a typer app."""
    app.command("aesthetics")(aesthetics)
    app.command("train-aesthetic")(train_aesthetic)
    app.command("eval-aesthetic")(eval_aesthetic)


if __name__ == "__main__":  # python -m gameqa.models.aesthetic_cli ... (before the commands are mounted on gameqa)
    standalone = typer.Typer(add_completion=False, no_args_is_help=True, help="Mean-and-spread image models.")
    register(standalone)
    standalone()
