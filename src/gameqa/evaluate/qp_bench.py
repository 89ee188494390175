"""The bitstream yardstick on a corpus: :class:`~gameqa.models.qp_linear.QPLinear` fitted and read on the test
split, and leave one game out, so that a pixel model's readings can be set beside what the quantiser alone gives.
Given one leave-one-game-out CNN run per game, also a quantiser head on the CNN: for each held-out game, fitted on
the other games' clips with the score each got from the run that held its own game out.

Each clip's quantiser is read once and kept in ``<corpus>/qp-levels.json`` (keyed by clip path, size and mtime), so
a second run reads no video.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Callable, Optional

from gameqa.data.manifest import manifest_root, read_manifest
from gameqa.errors import GameQAError
from gameqa.evaluate.metrics import plcc, rmse, srocc
from gameqa.evaluate.table import PERF_METRICS, bootstrap_ci
from gameqa.media.bitstream import frame_qps
from gameqa.models.qp_linear import FEATURES, QPLinear

CACHE_NAME = "qp-levels.json"


class QPFailures(GameQAError):
    """Clips whose quantiser could not be read: ``problems`` holds one line each."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(None, f"{len(problems)} clip(s) could not be read")


def clip_levels(rows: list[dict], root: Path, progress: Optional[Callable[[int, int], None]] = None,
                h264: str = "macroblock") -> dict[str, float]:
    """clip_id -> mean QP as a share of the codec's top, for every row (``abs_path`` set); read from the cache in
    ``root`` where the file is unchanged. Every unreadable clip is tried before QPFailures names them all; what was
    read is cached all the same. ``h264``: the H.264 reader (:data:`~gameqa.media.bitstream.H264_READERS`; with
    ``slice``, every clip is cached under its path and ``#slice``)."""
    from gameqa.sinks import write_atomic

    cache_path = root / CACHE_NAME
    try:
        cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    except (OSError, ValueError):
        cache = {}  # a cache that cannot be read is rebuilt
    levels, problems, changed = {}, [], False
    for done, row in enumerate(rows, start=1):
        try:
            stat = os.stat(row["abs_path"])
            stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
            key = row["path"] + ("#slice" if h264 == "slice" else "")
            entry = cache.get(key)
            if not entry or any(entry.get(k) != v for k, v in stamp.items()):
                qps = frame_qps(row["abs_path"], h264=h264)
                entry = {**stamp, "codec": qps.codec, "frames": len(qps.qps), "mean_qp": qps.mean, "level": qps.level}
                cache[key], changed = entry, True
            levels[row["clip_id"]] = entry["level"]
        except OSError as exc:
            problems.append(f"{row['abs_path']}: cannot read ({exc.strerror or exc})")
        except GameQAError as exc:
            problems.append(str(exc))
        if progress:
            progress(done, len(rows))
    if changed:
        write_atomic(json.dumps(cache, indent=1, sort_keys=True), str(cache_path))
    if problems:
        raise QPFailures(problems)
    return levels


def qp_bench(manifest: str | os.PathLike, root: str | os.PathLike | None = None, *, groups: tuple[str, ...] = ("game",),
             bar: float = 0.90, bootstrap: int = 1000, cnn_runs: Optional[list[Path]] = None,
             crop_mode: Optional[str] = "texture", checkpoint: str = "last",
             head_splits: Optional[tuple[str, ...]] = None, cnn_model: Optional[str] = None, h264: str = "macroblock",
             progress: Optional[Callable[[int, int], None]] = None,
             run_progress: Optional[Callable[[str], None]] = None,
             score_progress: Optional[Callable[[int, int], None]] = None) -> dict:
    """Fit on the train and val splits and read the test split; then, game by game, fit on every other game and
    read that one. Only rows of ``groups`` (the manifest's ``group`` column) take part. With ``cnn_runs`` (one
    run per game, each trained without it), each game is also read by the CNN alone and by the quantiser head on
    it, the bar then applying to the head; with ``head_splits`` too, ``result["head"]`` is the head fitted on every
    game's clips of those splits (each scored by the run that held its game out), to ship beside a model
    (:class:`~gameqa.models.qp_head.QPHead`). With ``cnn_model`` (a registered model or model folder, read as pixels
    alone, with its own crops and sampling: its own head is not applied) instead, every clip is scored by that one model and the test split is read
    by the quantiser alone, the CNN alone and the head fitted on the train and val splits; the games are then read
    by the quantiser alone (a model trained on every game has no held-out reading of one), and ``result["head"]``
    is fitted on ``head_splits``. Meant for a corpus the model never trained on (a new recording)."""
    if cnn_model is not None and cnn_runs is not None:
        raise GameQAError(None, "a quantiser head is fitted on one model's scores or on held-out runs', not both")
    if cnn_model is not None:
        from gameqa.models.registry import get_card

        get_card(cnn_model)  # an unknown model or a bad folder is named before any clip is read
    folder = manifest_root(manifest, root)
    rows = [r for r in read_manifest(manifest, root=folder, check_files=True) if r["group"] in groups]
    if not rows:
        raise GameQAError(manifest, f"no rows of group(s) {', '.join(groups)}")
    levels = clip_levels(rows, folder, progress, h264)
    clips = [{**r, "level": levels[r["clip_id"]]} for r in rows]

    def scored(pred, test: list[dict]) -> dict:
        mos = [c["mos"] for c in test]
        low, high = bootstrap_ci(PERF_METRICS["SROCC"], pred, mos, n_boot=bootstrap)
        return {"clips": len(test), "srocc": srocc(pred, mos), "srocc_ci": [low, high], "plcc": plcc(pred, mos),
                "rmse": rmse(pred, mos)}

    def read(train: list[dict], test: list[dict], with_cnn: bool = False) -> dict:
        model = QPLinear.fit(train, with_cnn)
        entry = scored(model.predict(test), test)
        if with_cnn:
            entry["cnn_weight"] = {codec: w[-1] for codec, w in model.coefs.items()}
        return entry

    result = {"manifest": str(manifest), "features": list(FEATURES), "bar": bar, "groups": list(groups),
              "h264_qp": h264}
    if cnn_model is not None:
        if run_progress:
            run_progress(f"{cnn_model} on {len(clips)} clips")
        pixels = _model_scores(cnn_model, clips, folder, score_progress)
        clips = [{**c, "cnn": p} for c, p in zip(clips, pixels)]
        result["cnn_model"] = cnn_model
        if head_splits:
            result["head"] = _fit_head(clips, head_splits, manifest, model=cnn_model, h264=h264)
    test = [c for c in clips if c["split"] == "test"]
    if test:
        rest = [c for c in clips if c["split"] != "test"]
        result["test"] = read(rest, test)
        if cnn_model is not None:
            result["test"] = {"quantiser": result["test"], "cnn": scored([c["cnn"] for c in test], test),
                              **read(rest, test, with_cnn=True)}
    games = sorted({c["game"] for c in clips})
    if cnn_runs is not None:
        by_game = _runs_by_game(cnn_runs, games)
        scores = _cnn_scores(by_game, manifest, crop_mode, checkpoint, run_progress)
        unscored = sorted({c["game"] for c in clips if c["clip_id"] not in scores})
        if unscored:
            raise GameQAError(manifest, f"clips of {', '.join(unscored)} have no score from the run holding it out")
        clips = [{**c, "cnn": scores[c["clip_id"]]} for c in clips]
        result["cnn_runs"] = {game: str(run) for game, run in sorted(by_game.items())}
        if head_splits:
            result["head"] = _fit_head(clips, head_splits, manifest, by_game=by_game, h264=h264)
    result["games"] = {}
    if len(games) > 1:
        for game in games:
            train, test = [c for c in clips if c["game"] != game], [c for c in clips if c["game"] == game]
            entry = read(train, test)
            if cnn_runs is not None:
                entry = {"quantiser": entry, "cnn": scored([c["cnn"] for c in test], test),
                         **read(train, test, with_cnn=True)}
            result["games"][game] = {**entry, "passes": bool(entry["srocc"] >= bar)}
    result["every_game_passes"] = bool(result["games"]) and all(g["passes"] for g in result["games"].values())
    return result


SCORES_NAME = "cnn-scores.json"
_SCORES_CHUNK = 50  # clips scored between two writes of the store


def _model_scores(model: str, clips: list[dict], root: Path,
                  progress: Optional[Callable[[int, int], None]]) -> list[float]:
    """Each clip's pooled pixel score by ``model`` (its own reading, its head left off), kept in
    ``<corpus>/cnn-scores.json`` under the model's name, version and weights file, and each clip's size and mtime,
    written every ``_SCORES_CHUNK`` clips: a second reading (another H.264 reader, say) scores no clip again, and a
    stopped one goes on where it stopped."""
    from gameqa.models.registry import get_card
    from gameqa.sinks import write_atomic
    from gameqa.train.evaluation import score_rows

    card = get_card(model)
    weights = os.stat(card.weights) if card.weights else None
    key = f"{card.name} {card.version} {weights.st_size if weights else 0} {weights.st_mtime_ns if weights else 0}"
    path = root / SCORES_NAME
    try:
        store = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        store = {}  # a store that cannot be read is rebuilt
    kept = store.setdefault(key, {})

    def stamp(clip: dict) -> list[int]:
        stat = os.stat(clip["abs_path"])
        return [stat.st_size, stat.st_mtime_ns]

    todo = [c for c in clips if kept.get(c["path"], {}).get("stamp") != stamp(c)]
    for start in range(0, len(todo), _SCORES_CHUNK):  # kept chunk by chunk: a stopped reading resumes
        chunk = todo[start:start + _SCORES_CHUNK]
        step = (lambda done, _total, at=start: progress(at + done, len(todo))) if progress else None
        scores = score_rows(model, chunk, bitstream_head=False, progress=step)
        kept.update({c["path"]: {"stamp": stamp(c), "score": s} for c, s in zip(chunk, scores)})
        write_atomic(json.dumps(store, sort_keys=True), str(path))
    return [kept[c["path"]]["score"] for c in clips]


def _fit_head(clips: list[dict], splits: tuple[str, ...], manifest, by_game: Optional[dict[str, Path]] = None,
              model: Optional[str] = None, h264: str = "macroblock"):
    from gameqa.models.qp_head import QPHead

    fit = [c for c in clips if c["split"] in splits]
    if not fit:
        raise GameQAError(manifest, f"no clips of split(s) {', '.join(splits)} to fit the head on")
    heights = sorted({int(c["display_height"]) for c in fit})
    if len(heights) > 1:
        raise GameQAError(manifest, f"clips of display heights {heights}: a head is fitted at one display height")
    counts = Counter(c["codec"] for c in fit)
    scorer = ({"runs": {g: str(r) for g, r in sorted(by_game.items())},
               "scores": "each clip scored by the run that held its game out"} if by_game is not None else
              {"model": model, "scores": "each clip scored by this model's pixels alone"})
    return QPHead(QPLinear.fit(fit, with_cnn=True), heights[0], "mean", h264_qp=h264, fitted_on={
        "manifest": str(manifest), "splits": list(splits), "clips": dict(sorted(counts.items())),
        "games": sorted({c["game"] for c in fit}), **scorer})


def _runs_by_game(runs: list[Path], games: list[str]) -> dict[str, Path]:
    """game -> the run that held it out; every game of the manifest needs exactly one."""
    from gameqa.evaluate.logo import held_out_game

    by_game: dict[str, Path] = {}
    for run in runs:
        game = held_out_game(run)
        if not game:
            raise GameQAError(run, "this run trained on every game: a quantiser head needs runs that held one out")
        if game in by_game:
            raise GameQAError(run, f"a second run holding out {game} (the first: {by_game[game]})")
        by_game[game] = Path(run)
    missing = [g for g in games if g not in by_game]
    if missing:
        raise GameQAError(None, f"no run holds out {', '.join(missing)}: a quantiser head needs one run per game")
    return by_game


def _cnn_scores(by_game: dict[str, Path], manifest, crop_mode, checkpoint: str,
                progress: Optional[Callable[[str], None]]) -> dict[str, float]:
    """clip_id -> the score of the run that held the clip's game out (its held-out reading, cached in the run)."""
    from gameqa.evaluate.runs import run_scores

    scores: dict[str, float] = {}
    for game, run in sorted(by_game.items()):
        if progress:
            progress(f"{run} on {game}")
        read = run_scores(run, manifest, "test", logo_game=game, crop_mode=crop_mode, checkpoint=checkpoint)
        scores.update(zip(read.clip_ids, read.predictions))
    return scores


def plot_qp_bench(result: dict, out_png: str | os.PathLike) -> Path:
    """Bars per held-out game: the quantiser alone and, with CNN runs, the CNN alone and the head (95% intervals
    where known); a line at the bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from gameqa.sinks import save_figure

    games = list(result["games"])
    head = "cnn_runs" in result
    series = ([("quantiser alone", "quantiser", "#8c8c8c"), ("CNN alone", "cnn", "#4472c4"),
               ("quantiser head on the CNN", None, "#2ca02c")] if head else [("quantiser alone", None, "#8c8c8c")])
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(games)), 4))
    for k, (label, key, color) in enumerate(series):
        entries = [result["games"][g][key] if key else result["games"][g] for g in games]
        values = np.array([e["srocc"] for e in entries])
        spans = np.array([[v - e["srocc_ci"][0], e["srocc_ci"][1] - v] for v, e in zip(values, entries)]).T
        x = np.arange(len(games)) + (k - (len(series) - 1) / 2) * width
        ax.bar(x, values, width, color=color, label=label, yerr=spans, capsize=2, error_kw={"linewidth": 0.8})
    ax.axhline(result["bar"], color="black", linestyle="--", linewidth=1, label=f"bar {result['bar']:.2f}")
    ax.set_xticks(range(len(games)), games, rotation=30, ha="right")
    low = min(0.5, min(result["games"][g]["cnn"]["srocc"] for g in games) - 0.05) if head else 0.5
    ax.set_ylim(max(0.0, low), 1)
    ax.set_ylabel("SROCC, game held out")
    ax.set_title("Leave one game out: each game read by a fit on the other games")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out_png, dpi=110)
