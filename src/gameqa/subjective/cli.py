"""``gameqa study``: serve a study, invite participants, export its votes, analyze votes.

Mounted by ``gameqa.cli`` as ``gameqa study``; also runs alone as
``python -m gameqa.subjective.cli``.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Optional

import numpy as np
import typer
from rich.text import Text

from gameqa.console import SERVER_LOG_LEVELS, check_choice, check_png, Table, console, fail as _fail
from gameqa.errors import GameQAError
from gameqa.sinks import save_figure, write_atomic

study_app = typer.Typer(no_args_is_help=True, add_completion=False,
                        help="Subjective studies: run the rating app, export and analyze votes.")

out = console()
err = console(stderr=True)

MODELS = ("mos", "bt500", "mle")


@study_app.command()
def serve(
    study_file: str = typer.Argument(..., metavar="STUDY.toml", help="The study definition."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="Port to listen on."),
    db: Optional[str] = typer.Option(None, "--db", help="Database URL (default: sqlite file "
                                     "next to the study file; postgresql://... accepted)."),
    log_level: str = typer.Option("info", "--log-level", help="critical, error, warning, info, debug or trace."),
) -> None:
    """Run the study app: participants join at /join, the experimenter page is /admin."""
    import uvicorn

    from gameqa.subjective.app import create_app
    from gameqa.subjective.study import load_study

    check_choice("--log-level", log_level, SERVER_LOG_LEVELS)
    try:
        study = load_study(study_file)
        app = create_app(study, db)
    except GameQAError as exc:
        _fail(str(exc))
    base = f"http://{host}:{port}"
    out.print(Text.assemble("study ", (study.name, "bold"), f": {len(study.stimuli)} stimuli, "
                            f"{study.method.description}"), highlight=False)
    out.print(f"votes in {app.state.store.url}", highlight=False)
    out.print(f"participants: {base}/join    experimenter: {base}/admin", highlight=False)
    if not study.experimenter_token:
        out.print(f"experimenter token (this run only; set GAMEQA_STUDY_TOKEN to fix it): "
                  f"{app.state.experimenter_token}", highlight=False)
    uvicorn.run(app, host=host, port=port, log_level=log_level)


@study_app.command()
def links(
    study_file: str = typer.Argument(..., metavar="STUDY.toml", help="The study definition."),
    count: int = typer.Option(1, "--count", "-n", min=1, max=10000, help="How many links."),
    db: Optional[str] = typer.Option(None, "--db", help="Database URL (default as for serve)."),
    base_url: str = typer.Option("http://127.0.0.1:8000", "--base-url", help="Server address."),
) -> None:
    """Create personal participant links (for studies that invite rather than let people join)."""
    from gameqa.subjective.store import Rejected, StudyStore
    from gameqa.subjective.study import load_study

    try:
        store = StudyStore(load_study(study_file), db)
        try:
            for _ in range(count):
                out.print(f"{base_url.rstrip('/')}/p/{store.create_participant('invited')}",
                          highlight=False, soft_wrap=True)
        finally:
            store.close()
    except Rejected as exc:
        _fail(exc.message)
    except GameQAError as exc:
        _fail(str(exc))


@study_app.command()
def export(
    study_file: str = typer.Argument(..., metavar="STUDY.toml", help="The study definition."),
    out_file: str = typer.Option(..., "--out", "-o", help="CSV file to write."),
    db: Optional[str] = typer.Option(None, "--db", help="Database URL (default as for serve)."),
    include_all: bool = typer.Option(False, "--all", help="Also training votes and repeats, "
                                     "with phase, repeat, position and times."),
) -> None:
    """Write the votes as CSV (stimulus, observer, score, content): `study analyze` reads it."""
    from gameqa.subjective.app import votes_to_csv
    from gameqa.subjective.store import StudyStore
    from gameqa.subjective.study import load_study

    try:
        store = StudyStore(load_study(study_file), db, create=False)
        try:
            rows = store.votes(include_all=include_all)
        finally:
            store.close()
        write_atomic(votes_to_csv(rows), out_file)
    except GameQAError as exc:
        _fail(str(exc))
    err.print(f"{len(rows)} votes written to {out_file}", highlight=False)


def _parse_scale(text: Optional[str]) -> Optional[tuple[float, float]]:
    if text is None:
        return None
    try:
        low, high = (float(part) for part in text.split(":"))
    except ValueError:
        _fail(f"--scale {text!r} must be LOW:HIGH, e.g. 1:5")
    if not low < high:
        _fail(f"--scale {text!r}: LOW must be below HIGH")
    return (low, high)


def _number(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def result_to_dict(model: str, result) -> dict:
    """A JSON-ready summary of a mos / bt500 / mle result (NaN becomes null)."""
    from gameqa.subjective.analysis import _manifest_rows

    columns, rows = _manifest_rows(result)
    data = {"model": model,
            "stimuli": [{c: _number(v) for c, v in zip(columns, row)} for row in rows]}
    if model == "bt500":
        data["rejected_observers"] = list(result.rejected_observer_ids)
        data["observers"] = [
            {"observer": o, "p": int(result.p_counts[i]), "q": int(result.q_counts[i]),
             "ratio": _number(result.ratio[i]), "balance": _number(result.balance[i]),
             "rejected": o in result.rejected_observer_ids}
            for i, o in enumerate(result.observer_ids)]
    elif model == "mle":
        data["observers"] = [
            {"observer": o, "bias": _number(result.observer_bias[i]),
             "bias_ci": [_number(result.observer_bias_ci_low[i]),
                         _number(result.observer_bias_ci_high[i])],
             "inconsistency": _number(result.observer_inconsistency[i]),
             "inconsistency_ci": [_number(result.observer_inconsistency_ci_low[i]),
                                  _number(result.observer_inconsistency_ci_high[i])]}
            for i, o in enumerate(result.observer_ids)]
        data.update(converged=bool(result.converged), collapsed=bool(result.collapsed),
                    iterations=int(result.iterations))
    return data


def _shown(value, pattern: str = "{:.3f}") -> str:
    """A table cell: the number, or "n/a" where it could not be estimated (NaN or inf)."""
    if isinstance(value, (float, np.floating)):
        return pattern.format(float(value)) if math.isfinite(value) else "n/a"
    return str(value)


def print_mle_tables(result, console=None, title: str | None = None) -> None:
    """Print an MLE result: per stimulus (MOS and model quality) and per observer (bias and
    inconsistency with 95% bounds). Values that cannot be estimated show as "n/a"."""

    from gameqa.subjective.analysis import _manifest_rows

    console = console or out
    columns, rows = _manifest_rows(result)
    stimuli = Table(title=title)
    for column in columns:
        stimuli.add_column(column, justify="left" if column == "stimulus" else "right")
    for row in rows:
        stimuli.add_row(*[_shown(v) for v in row])
    console.print(stimuli)
    observers = Table(title="observers")
    for column in ("observer", "bias", "bias_ci_low", "bias_ci_high", "inconsistency",
                   "inconsistency_ci_low", "inconsistency_ci_high"):
        observers.add_column(column, justify="left" if column == "observer" else "right")
    for i, observer in enumerate(result.observer_ids):
        observers.add_row(observer, _shown(result.observer_bias[i], "{:+.3f}"),
                          _shown(result.observer_bias_ci_low[i]),
                          _shown(result.observer_bias_ci_high[i]),
                          _shown(result.observer_inconsistency[i]),
                          _shown(result.observer_inconsistency_ci_low[i]),
                          _shown(result.observer_inconsistency_ci_high[i]))
    console.print(observers)


def plot_result(model: str, result, path: str | os.PathLike) -> Path:
    """Save a PNG: MOS (or MLE quality) per stimulus with 95% intervals, sorted; for mle also
    each observer's bias and inconsistency with intervals; for bt500 the rejected observers
    are named in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = result.mos if model in ("bt500", "mle") else result
    if model == "mle":
        centre, low, high = result.quality, result.quality_ci_low, result.quality_ci_high
        label = "quality (MLE) with 95% interval"
    else:
        centre, low, high = summary.mean, summary.ci_low, summary.ci_high
        label = "MOS with 95% interval"
    order = np.argsort(np.nan_to_num(centre, nan=-np.inf))
    panels = 3 if model == "mle" else 1
    figure, axes = plt.subplots(1, panels, figsize=(6 + 4 * (panels - 1), 4 + 0.12 * len(order)),
                                squeeze=False)
    ax = axes[0][0]
    y = np.arange(len(order))
    error = np.vstack([centre[order] - low[order], high[order] - centre[order]])
    ax.errorbar(centre[order], y, xerr=np.nan_to_num(error), fmt="o", color="#1f5fa8",
                ecolor="#777", capsize=3)
    ax.set_yticks(y, [summary.stimulus_ids[i] for i in order], fontsize=8)
    ax.set_xlabel(label)
    title = "MOS" if model == "mos" else ("MOS after BT.500 screening" if model == "bt500"
                                          else "MLE subject model")
    if model == "bt500":
        title += f"\nrejected: {', '.join(result.rejected_observer_ids) or 'none'}"
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    if model == "mle":
        observers = np.arange(len(result.observer_ids))
        for ax, values, lo, hi, name in (
                (axes[0][1], result.observer_bias, result.observer_bias_ci_low,
                 result.observer_bias_ci_high, "observer bias"),
                (axes[0][2], result.observer_inconsistency, result.observer_inconsistency_ci_low,
                 result.observer_inconsistency_ci_high, "observer inconsistency")):
            ax.errorbar(values, observers, xerr=np.nan_to_num(np.vstack([values - lo, hi - values])),
                        fmt="s", color="#a8461f", ecolor="#777", capsize=3)
            ax.set_yticks(observers, list(result.observer_ids), fontsize=8)
            ax.set_xlabel(name)
            ax.set_title(name)
            ax.grid(axis="x", alpha=0.3)
        axes[0][1].axvline(0.0, color="#333", linewidth=0.8)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(figure, path, dpi=100)


@study_app.command()
def analyze(
    votes: str = typer.Argument(..., metavar="VOTES", help="Votes CSV (stimulus, observer, score"
                                "[, content]) or a sureal/vmaf dataset .py file."),
    model: str = typer.Option("mos", "--model", "-m", help="mos, bt500 or mle."),
    output: str = typer.Option("table", "--output", "-o", help="table or json."),
    manifest: Optional[str] = typer.Option(None, "--manifest", help="Write the trainers' manifest "
                                           "(stimulus, mean, std, n, ...) to this CSV."),
    plot: Optional[str] = typer.Option(None, "--plot", help="Save a PNG plot here."),
    scale: Optional[str] = typer.Option(None, "--scale", help="LOW:HIGH: refuse votes off it."),
    min_inconsistency: float = typer.Option(0.0, "--min-inconsistency", min=0.0,
                                            help="mle: lower bound on observer inconsistency "
                                            "(bounds the fit in small studies; 0 = sureal's)."),
) -> None:
    """MOS with intervals, BT.500 observer screening, or the MLE subject model of a study's votes."""
    from gameqa.subjective import (bt500_screen, mle_subject_model, mos, print_mos_table,
                                   read_sureal_dataset, read_votes_csv, write_manifest)

    if model not in MODELS:
        _fail(f"--model {model!r} is not one of {', '.join(MODELS)}")
    if output not in ("table", "json"):
        _fail(f"--output {output!r} is not table or json")
    check_png(plot)
    bounds = _parse_scale(scale)
    try:
        reader = read_sureal_dataset if votes.endswith(".py") else read_votes_csv
        table = reader(votes, scale=bounds)
        if model == "mos":
            result = mos(table)
        elif model == "bt500":
            result = bt500_screen(table)
        else:
            result = mle_subject_model(table, min_inconsistency=min_inconsistency)
        if plot:  # the plot first: if the manifest then fails, the plot is taken back (both or neither)
            try:
                plot_result(model, result, plot)
            except OSError as exc:
                _fail(f"{plot}: cannot write the plot ({exc.strerror or exc})")
        if manifest:
            try:
                write_manifest(result, manifest)
            except GameQAError:
                if plot:
                    Path(plot).unlink(missing_ok=True)
                raise
    except GameQAError as exc:
        _fail(str(exc))
    if output == "json":
        out.print_json(json.dumps(result_to_dict(model, result)))
    else:
        title = f"{table.name}: {model}, {table.num_votes} votes, {table.num_observers} observers"
        if model == "mle":
            print_mle_tables(result, console=out, title=title)
        else:
            print_mos_table(result, console=out, title=title)
    if model == "mle" and result.collapsed:
        err.print("warning: the MLE fit collapsed (some observer fitted with near-zero noise); "
                  "its intervals are not meaningful. Try --min-inconsistency 0.1.", highlight=False)
    if manifest:
        err.print(f"manifest written to {manifest}", highlight=False)
    if plot:
        err.print(f"plot written to {plot}", highlight=False)


if __name__ == "__main__":
    study_app()
