"""The leave-one-game-out table: every game of a corpus scored by the runs trained without it (one or more seeds),
each against a bar (ERAQUE's is SROCC >= 0.90 for every game).

A run stands for a held-out game only if its own ``config.json`` says it left that game out (``data.logo_game``);
the game's clips are all of its clips (``logo_split``), scored through each run's prediction cache
(``gameqa.evaluate.runs.run_scores``). A run whose training has not reached its last step (``training_state``:
a chain stopped mid-run leaves a best.pt of its validations so far) is listed as unfinished and does not count,
unless asked for."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from gameqa.data.manifest import read_manifest
from gameqa.errors import ConfigError
from gameqa.evaluate.runs import describe_state, run_scores, training_state
from gameqa.evaluate.table import PERF_METRICS, bootstrap_ci


def held_out_game(run: str | os.PathLike) -> str:
    """The game a run left out of training, from its ``config.json`` ('' if it trained on every game)."""
    path = Path(run) / "config.json"
    try:
        data = json.loads(path.read_text()).get("data") or {}
        return str(data.get("logo_game", "") or "")
    except (OSError, ValueError, AttributeError) as exc:
        raise ConfigError(path, f"cannot tell which game this run held out ({exc})") from None


def summarise_runs(scored: list[dict]) -> dict:
    """One held-out game's runs (seeds), each with ``srocc`` and ``plcc``: their mean SROCC, its sd over runs (NaN
    for one run), the lowest SROCC and the mean PLCC."""
    sroccs = np.array([r["srocc"] for r in scored])
    return {"srocc": float(sroccs.mean()),
            "srocc_sd": float(sroccs.std(ddof=1)) if len(sroccs) > 1 else float("nan"),
            "srocc_min": float(sroccs.min()), "plcc": float(np.mean([r["plcc"] for r in scored]))}


def logo_table(runs: dict[str, list[Path]], manifest: str | os.PathLike, *, bar: float = 0.90,
               crops: Optional[int] = None, crop_mode: Optional[str] = None, bootstrap: int = 1000,
               include_unfinished: bool = False, progress: Optional[Callable[[str], None]] = None,
               clip_progress: Optional[Callable[[int, int], None]] = None, checkpoint: str = "best") -> dict:
    """Per game of ``manifest`` (its ``game`` group): the runs that held it out, each run's SROCC with its 95%
    bootstrap interval and PLCC, their mean (and sd over runs), and whether the mean reaches ``bar``; games without
    a run are listed with ``runs = []``. Every run is checked to have held out its game before anything is scored.
    Unfinished runs go in the game's ``unfinished`` list (run, how far it went) and are not scored, unless
    ``include_unfinished`` (an interim look): then they are scored and marked ``finished: false``.
    ``progress(message)`` names each run before it is scored, ``clip_progress(done, total)`` counts its clips;
    ``checkpoint`` says which of each run's checkpoints is scored ("best" or "last", ``runs.CHECKPOINTS``)."""
    rows = read_manifest(manifest)
    games = sorted({r["game"] for r in rows if r.get("group", "game") == "game"})
    unknown = sorted(set(runs) - set(games))
    if unknown:
        raise ConfigError(manifest, f"no game {', '.join(map(repr, unknown))} here (games: {', '.join(games)})")
    for game, dirs in runs.items():
        for run in dirs:
            left_out = held_out_game(run)
            if left_out != game:
                raise ConfigError(run, f"trained with data.logo_game = {left_out!r}, so it saw {game} in training: "
                                       f"it cannot stand for {game} held out")
    sources = {r["clip_id"]: r["source_id"] for r in rows}  # read once, not again for every run
    out = {"manifest": str(manifest), "bar": bar, "crop_mode": crop_mode or "each run's own", "checkpoint": checkpoint,
           "include_unfinished": include_unfinished, "games": {}}
    for game in games:
        scored, unfinished = [], []
        for run in runs.get(game, []):
            state = training_state(run)
            if not state["finished"] and not include_unfinished:
                unfinished.append({"run": str(run), "state": describe_state(state), **state})
                continue
            if progress:
                progress(f"{game}: {run}")
            s = run_scores(run, manifest, "test", logo_game=game, crops=crops, crop_mode=crop_mode, sources=sources,
                           clip_progress=clip_progress, checkpoint=checkpoint)
            low, high = bootstrap_ci(PERF_METRICS["SROCC"], s.predictions, s.mos, n_boot=bootstrap)
            scored.append({"run": str(run), "clips": len(s.clip_ids), "srocc": s.metrics["srocc"],
                           "srocc_ci": [low, high], "plcc": s.metrics["plcc"], "finished": state["finished"],
                           "state": describe_state(state)})
        entry: dict = {"runs": scored, "unfinished": unfinished}
        if scored:
            summary = summarise_runs(scored)
            entry.update(clips=scored[0]["clips"], **summary, passes=bool(summary["srocc"] >= bar))
        out["games"][game] = entry
    out["every_game_passes"] = all(e.get("passes", False) for e in out["games"].values())
    return out


def plot_logo(result: dict, out_png: str | os.PathLike) -> Path:
    """Bars: each game's mean SROCC over its runs; dots: the runs; a line at the bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gameqa.sinks import save_figure

    games = list(result["games"])
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(games)), 4))
    for i, game in enumerate(games):
        entry = result["games"][game]
        if not entry["runs"]:
            ax.text(i, 0.02, "no run", ha="center", rotation=90, fontsize=8)
            continue
        ax.bar(i, entry["srocc"], color="#4472c4" if entry["passes"] else "#c44e52", alpha=0.8)
        ax.scatter([i] * len(entry["runs"]), [r["srocc"] for r in entry["runs"]], color="black", s=12, zorder=3)
    ax.axhline(result["bar"], color="grey", linestyle="--", linewidth=1, label=f"bar {result['bar']:.2f}")
    ax.set_xticks(range(len(games)), games, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("SROCC, game held out")
    ax.set_title("Leave one game out: each game scored by runs trained without it")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return save_figure(fig, out_png, dpi=110)
