"""Compare groups of training runs over seeds (the loss ablation, distilled vs plain students).

Each run folder holds a trainer checkpoint (``best.pt``). Its clip predictions on a manifest split are computed
once (``gameqa.train.evaluation.evaluate_split``, torch) and kept beside it in ``predictions-<split>.json``,
keyed by the checkpoint's digest, so a report can be rebuilt without scoring again. Metrics per run: SROCC,
PLCC, KROCC, RMSE and the hard-pair accuracy (share of clip pairs whose MOS differ by at most 0.25 or 0.5, not
tied, that the model orders correctly); where the manifest names each clip's source, also how well a run orders
the encodes of one source (``within-source``: mean SROCC over sources with at least 3 clips) and the sources
against each other (``between-source``: SROCC of the per-source mean prediction against the per-source mean MOS);
per group: mean and sample standard deviation over the runs, and on request a table per content (its level
offset and the order inside it, and the runs' score of its pristine sources) with a plot.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from gameqa.errors import ConfigError
from gameqa.evaluate.metrics import close_pair_accuracy, krocc, plcc, rmse, srocc
from gameqa.sinks import save_figure, write_atomic

PAIR_GAPS = (0.25, 0.5)
METRICS = ("srocc", "plcc", "krocc", "rmse") + tuple(f"pairs<={g:g}" for g in PAIR_GAPS)
SOURCE_METRICS = ("within-source", "between-source")
MIN_SOURCE_CLIPS = 3  # a source enters the within-source mean with at least this many clips


@dataclass
class RunScores:
    """One run's clip predictions on one split."""

    run_dir: Path
    clip_ids: list[str]
    predictions: list[float]
    mos: list[float]
    metrics: dict[str, float] = field(default_factory=dict)


def split_metrics(pred: Sequence[float], mos: Sequence[float]) -> dict[str, float]:
    """SROCC, PLCC, KROCC, RMSE and the hard-pair accuracies of one prediction set."""
    out = {"srocc": srocc(pred, mos), "plcc": plcc(pred, mos), "krocc": krocc(pred, mos), "rmse": rmse(pred, mos)}
    for gap in PAIR_GAPS:
        out[f"pairs<={gap:g}"] = close_pair_accuracy(pred, mos, gap)[0]
    return {k: float(v) for k, v in out.items()}


def _index_groups(keys: Sequence[str]) -> dict[str, list[int]]:
    """key -> the positions holding it, in first-seen order."""
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return groups


def _orderable(pred: np.ndarray, mos: np.ndarray) -> bool:
    """Whether a group's SROCC means something: at least ``MIN_SOURCE_CLIPS`` clips, labels and predictions varied."""
    return len(mos) >= MIN_SOURCE_CLIPS and np.ptp(mos) > 0 and np.ptp(pred) > 0


def source_metrics(pred: Sequence[float], mos: Sequence[float], sources: Sequence[str]) -> dict[str, float]:
    """Within-source and between-source SROCC (NaN where undefined: no source with 3 varied clips, < 2 sources).

    A model can order each source's encodes well and still misplace whole sources against each other (the usual
    failure on a game it never saw); the overall SROCC mixes the two, these split them."""
    pred_arr, mos_arr = np.asarray(pred, np.float64), np.asarray(mos, np.float64)
    groups = _index_groups(sources)
    within = [srocc(pred_arr[idx], mos_arr[idx]) for idx in groups.values() if _orderable(pred_arr[idx], mos_arr[idx])]
    between = float("nan")
    if len(groups) >= 2:
        between = srocc([pred_arr[idx].mean() for idx in groups.values()],
                        [mos_arr[idx].mean() for idx in groups.values()])
    return {"within-source": float(np.mean(within)) if within else float("nan"), "between-source": float(between)}


def content_table(pred: Sequence[float], mos: Sequence[float], contents: Sequence[str]) -> list[dict]:
    """Per content (one game session: its sources and their encodes), ordered by mean MOS: clips, mean MOS, mean
    prediction, ``offset`` (mean prediction minus mean MOS: how far the model puts the whole content off its
    level) and ``srocc`` inside it (NaN below 3 varied clips). Shows which content an unseen game's misordered
    levels come from."""
    pred_arr, mos_arr = np.asarray(pred, np.float64), np.asarray(mos, np.float64)
    rows = []
    for name, idx in _index_groups(contents).items():
        p, m = pred_arr[idx], mos_arr[idx]
        rows.append({"content": name, "clips": len(idx), "mos": float(m.mean()), "prediction": float(p.mean()),
                     "offset": float(p.mean() - m.mean()),
                     "srocc": float(srocc(p, m)) if _orderable(p, m) else float("nan")})
    return sorted(rows, key=lambda r: (r["mos"], r["content"]))


def offset_free_srocc(pred: Sequence[float], mos: Sequence[float], contents: Sequence[str]) -> float:
    """SROCC once each content's mean offset (``content_table``) is taken out of its clips' predictions: how
    well the clips would be ordered if the model put every content at its true level. A diagnostic that reads
    the labels, not a score of the model: next to the plain SROCC it tells how much of the error is contents
    placed at the wrong level (few contents per split make that part large and noisy)."""
    pred_arr, mos_arr = np.asarray(pred, np.float64).copy(), np.asarray(mos, np.float64)
    for idx in _index_groups(contents).values():
        pred_arr[idx] -= pred_arr[idx].mean() - mos_arr[idx].mean()
    return float(srocc(pred_arr, mos_arr))


def split_contents(clip_ids: Sequence[str], pred: Sequence[float], mos: Sequence[float],
                   manifest: str | os.PathLike) -> dict:
    """One model's per-content view of a scored split (``gameqa eval --by-content``): its ``content_table``
    (key ``contents``; a clip without a content stands for its own source) and ``offset_free_srocc``."""
    content, source = _clip_fields(manifest, "content", "source_id")
    names = [content[c] or source[c] for c in clip_ids]
    return {"contents": content_table(pred, mos, names), "offset_free_srocc": offset_free_srocc(pred, mos, names)}


def manifest_groups(manifest: str | os.PathLike, columns: Sequence[str]) -> dict[str, dict[str, str]]:
    """For each of ``columns`` of a corpus manifest (codec, height, game, ...), clip_id -> its value as text; a
    column the manifest lacks is a one-line ConfigError (``_clip_fields``), raised before any clip is scored."""
    return dict(zip(columns, _clip_fields(manifest, *columns)))


def split_by(clip_ids: Sequence[str], pred: Sequence[float], mos: Sequence[float],
             groups: dict[str, dict[str, str]]) -> dict[str, list[dict]]:
    """``content_table`` rows per value of each grouping column (``manifest_groups``), keyed by column: where a model
    errs by codec, resolution or game, as ``--by-content`` shows it by content (``gameqa eval --by COLUMN``)."""
    return {column: content_table(pred, mos, [values[c] for c in clip_ids]) for column, values in groups.items()}


def group_contents(per_run: Sequence[RunScores], manifest: str | os.PathLike,
                   content: Optional[dict[str, str]] = None,
                   pristine: Optional[Sequence[dict[str, float]]] = None,
                   sources: Optional[dict[str, str]] = None) -> list[dict]:
    """``content_table`` of a group: each clip's prediction averaged over the group's runs (``content``:
    clip_id -> content, read from ``manifest`` when not given). With ``pristine`` (per run, source_id -> its score
    of the pristine source, ``run_pristine``) each row also gets ``pristine``: the mean over runs and the
    content's sources (``sources``: clip_id -> source_id, read from ``manifest`` when not given)."""
    content = _clip_field(manifest, "content") if content is None else content
    first = per_run[0]
    for run in per_run[1:]:
        if run.clip_ids != first.clip_ids:
            raise ConfigError(run.run_dir, f"scored other clips than {first.run_dir}: no per-content mean over them")
    missing = [c for c in first.clip_ids if c not in content]
    if missing:
        raise ConfigError(manifest, f"has no clip {missing[0]!r} (scored by {first.run_dir})")
    pred = np.mean([r.predictions for r in per_run], axis=0)
    rows = content_table(pred, first.mos, [content[c] for c in first.clip_ids])
    if pristine is not None:
        clip_source = _clip_field(manifest, "source_id") if sources is None else sources
        by_content: dict[str, set[str]] = {}
        for c in first.clip_ids:
            by_content.setdefault(content[c], set()).add(clip_source[c])
        for row in rows:
            row["pristine"] = float(np.mean([run[s] for run in pristine for s in sorted(by_content[row["content"]])]))
    return rows


def plot_contents(result: dict[str, dict], out_png: str | os.PathLike) -> Path:
    """Mean prediction against mean MOS per content, one colour per group, each point named: a content far
    from the diagonal is one the model puts at the wrong level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 6))
    values: list[float] = []
    for label, res in result.items():
        rows = res.get("contents") or []
        x = [r["mos"] for r in rows]
        y = [r["prediction"] for r in rows]
        ax.scatter(x, y, label=label, s=28)
        for r in rows:
            ax.annotate(r["content"], (r["mos"], r["prediction"]), fontsize=7, xytext=(3, 2),
                        textcoords="offset points")
        values += x + y
    if values:
        lo, hi = min(values) - 0.1, max(values) + 0.1
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
    ax.set_xlabel("mean MOS of the content's clips")
    ax.set_ylabel("mean prediction")
    ax.set_title("levels per content (off the diagonal: misplaced content)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out_png, dpi=110)


def _clip_fields(manifest: str | os.PathLike, *columns: str) -> list[dict[str, str]]:
    """For each of ``columns`` (source_id, content, height, ...), clip_id -> that column of a corpus manifest as
    text (a height is "720"), read once; a column the manifest lacks is a ConfigError naming the ones it has."""
    from gameqa.data.manifest import read_manifest

    rows = read_manifest(manifest)  # never empty: read_manifest refuses a manifest without rows
    for column in columns:
        if column not in rows[0]:
            raise ConfigError(manifest, f"has no column {column!r} to group by (it has: {', '.join(rows[0])})")
    return [{r["clip_id"]: str(r[column]) for r in rows} for column in columns]


def _clip_field(manifest: str | os.PathLike, column: str) -> dict[str, str]:
    """clip_id -> ``column`` of a corpus manifest."""
    return _clip_fields(manifest, column)[0]


def _with_sources(scores: RunScores, sources: dict[str, str]) -> RunScores:
    """``scores`` with the source metrics added when every clip's source is known."""
    if scores.clip_ids and all(c in sources for c in scores.clip_ids):
        scores.metrics.update(source_metrics(scores.predictions, scores.mos, [sources[c] for c in scores.clip_ids]))
    return scores


@dataclass
class _RunCache:
    """Where a run keeps one kind of scores for one split, and what it holds when still valid."""

    run: Path
    checkpoint: Path
    path: Path
    stamp: dict  # checkpoint digest, manifest, split tag: written with the scores, checked on reading
    saved: Optional[dict]

    def write(self, **scores) -> None:
        write_atomic(json.dumps({**self.stamp, **scores}), str(self.path))


def _rows_digest(manifest: str | os.PathLike, split: str, logo_game: Optional[str]) -> str:
    """SHA-1 of the manifest rows a run is scored on (``split``, or every clip of ``logo_game``): rows added to,
    or changed in, other games or splits leave a run's kept predictions valid."""
    from gameqa.train.evaluation import split_of

    rows = split_of(Path(manifest), split, logo_game)
    text = json.dumps([{k: v for k, v in sorted(r.items()) if not k.startswith("abs_")} for r in rows], default=str)
    return hashlib.sha1(text.encode()).hexdigest()


CHECKPOINTS = ("best", "last")
"""Which checkpoint of a run is scored: ``best.pt`` (the step with the best validation SROCC, the trainer's pick)
or ``last.pt`` (where training ended)."""


def _run_cache(run_dir: str | os.PathLike, manifest: str | os.PathLike, kind: str, split: str,
               logo_game: Optional[str], crops: Optional[int], crop_mode: Optional[str],
               checkpoint: str = "best") -> _RunCache:
    """The run's ``<kind>-<tag>.json`` cache; ``saved`` is its content when made by this checkpoint and manifest."""
    from gameqa.data.corpus import file_digest

    if checkpoint not in CHECKPOINTS:
        raise ConfigError(None, f"checkpoint must be one of {', '.join(CHECKPOINTS)}, not {checkpoint!r}")
    run = Path(run_dir)
    ckpt = run / f"{checkpoint}.pt"
    if not ckpt.is_file():
        raise ConfigError(run, f"no {checkpoint}.pt in this run folder")
    if not Path(manifest).is_file():
        raise ConfigError(manifest, "no such manifest file")
    tag = ((f"{split}-logo-{logo_game}" if logo_game else split) + (f"-crops{crops}" if crops else "")
           + (f"-{crop_mode}" if crop_mode and crop_mode != "grid" else "")
           + ("-last" if checkpoint == "last" else ""))
    stamp = {"checkpoint": file_digest(ckpt), "manifest": str(Path(manifest).resolve()),
             "rows_digest": _rows_digest(manifest, split, logo_game), "split": tag}
    path = run / f"{kind}-{tag}.json"
    saved = None
    if path.is_file():
        saved = json.loads(path.read_text())
        if any(saved.get(key) != stamp[key] for key in ("checkpoint", "manifest", "rows_digest")):
            saved = None  # another checkpoint, or the clips of this split rebuilt or edited since: scored again
    return _RunCache(run, ckpt, path, stamp, saved)


def run_scores(run_dir: str | os.PathLike, manifest: str | os.PathLike, split: str = "test", *,
               logo_game: Optional[str] = None, frames_cache: Optional[str] = None,
               crops: Optional[int] = None, crop_mode: Optional[str] = None,
               sources: Optional[dict[str, str]] = None,
               clip_progress: Optional[Callable[[int, int], None]] = None, checkpoint: str = "best") -> RunScores:
    """A run's predictions on ``split`` (from its cache file when the checkpoint is unchanged).

    ``crops`` overrides the checkpoint's crops per frame at inference, ``crop_mode`` their placement
    ("grid", the default, or "texture"); ``sources`` (clip_id -> source_id) saves reading the manifest again;
    ``clip_progress(done, total)`` is called after each clip scored; ``checkpoint`` is one of ``CHECKPOINTS``.
    """
    cache = _run_cache(run_dir, manifest, "predictions", split, logo_game, crops, crop_mode, checkpoint)
    sources = _clip_field(manifest, "source_id") if sources is None else sources
    if cache.saved is not None:
        saved = cache.saved
        return _with_sources(RunScores(cache.run, saved["clip_ids"], saved["predictions"], saved["mos"],
                                       split_metrics(saved["predictions"], saved["mos"])), sources)
    from gameqa.train.evaluation import evaluate_split

    ev = evaluate_split(str(cache.checkpoint), manifest, split, logo_game=logo_game, frames_cache=frames_cache,
                        bootstrap=0, crops=crops, crop_mode=crop_mode, progress=clip_progress)
    cache.write(clip_ids=ev.clip_ids, predictions=ev.predictions, mos=ev.mos)
    return _with_sources(RunScores(cache.run, ev.clip_ids, list(ev.predictions), list(ev.mos),
                                   split_metrics(ev.predictions, ev.mos)), sources)


def run_pristine(run_dir: str | os.PathLike, manifest: str | os.PathLike, split: str = "test", *,
                 logo_game: Optional[str] = None, crops: Optional[int] = None,
                 crop_mode: Optional[str] = None, checkpoint: str = "best") -> dict[str, float]:
    """A run's scores of the pristine sources of ``split`` (``gameqa.train.evaluation.score_sources``), kept beside
    the checkpoint in ``pristine-<split>.json`` like its predictions."""
    cache = _run_cache(run_dir, manifest, "pristine", split, logo_game, crops, crop_mode, checkpoint)
    if cache.saved is not None:
        return cache.saved["sources"]
    from gameqa.train.evaluation import score_sources

    scores = score_sources(str(cache.checkpoint), manifest, split, logo_game=logo_game, crops=crops,
                           crop_mode=crop_mode)
    cache.write(sources=scores)
    return scores


def training_state(run_dir: str | os.PathLike) -> dict:
    """How far a run's training went, from its ``last.pt``: ``step``, ``epoch`` (epochs completed), the planned
    ``epochs`` and ``max_steps`` of its own config, and ``finished`` (it reached its last step: all its epochs, or
    ``max_steps``). A folder with a ``best.pt`` but no ``last.pt`` (weights copied on their own) counts as finished."""
    from gameqa.train.trainer import load_checkpoint

    run = Path(run_dir)
    if not (run / "last.pt").is_file():
        if (run / "best.pt").is_file():
            return {"step": None, "epoch": None, "epochs": None, "max_steps": None, "finished": True}
        raise ConfigError(run, "no last.pt or best.pt in this run folder")
    ckpt = load_checkpoint(run / "last.pt")
    train = ckpt.get("config", {}).get("train", {})
    step, epoch = int(ckpt.get("step", 0)), int(ckpt.get("epoch", 0))
    epochs, max_steps = int(train.get("epochs", 0)), int(train.get("max_steps", 0) or 0)
    return {"step": step, "epoch": epoch, "epochs": epochs, "max_steps": max_steps,
            "finished": epoch >= epochs or bool(max_steps and step >= max_steps)}


def describe_state(state: dict) -> str:
    """``training_state`` in words: "step 300, 1 of 3 epochs done"."""
    if state["step"] is None:
        return "no last.pt"
    return f"step {state['step']}, {state['epoch']} of {state['epochs']} epochs done" + (
        f" (max_steps {state['max_steps']})" if state["max_steps"] else "")


def expand_group(spec: str) -> tuple[str, list[Path]]:
    """``"label=glob"`` -> (label, sorted run folders); an empty match is an error."""
    label, sep, pattern = spec.partition("=")
    if not sep or not label.strip() or not pattern.strip():
        raise ConfigError(None, f"bad group {spec!r}: expected LABEL=RUN_GLOB")
    runs = sorted(Path(p) for p in glob.glob(os.path.expanduser(pattern.strip())) if Path(p).is_dir())
    if not runs:
        raise ConfigError(pattern.strip(), "matches no run folder")
    return label.strip(), runs


def compare_groups(groups: dict[str, list[Path]], manifest: str | os.PathLike, split: str = "test", *,
                   logo_game: Optional[str] = None, crops: Optional[int] = None, crop_mode: Optional[str] = None,
                   progress: Optional[Callable[[str], None]] = None, contents: bool = False,
                   pristine: bool = False, clip_progress: Optional[Callable[[int, int], None]] = None,
                   checkpoint: str = "best") -> dict[str, dict]:
    """Per group: its runs' metrics and their mean and sample std (ddof=1) over runs; with ``contents`` also
    its ``group_contents`` table (key ``contents``), with ``pristine`` too each content's pristine score.
    ``progress(message)`` names each run before it is scored, ``clip_progress(done, total)`` counts its clips;
    ``checkpoint``: which of each run's checkpoints (``CHECKPOINTS``)."""
    if pristine and not contents:
        raise ConfigError(None, "the pristine scores go in the per-content table: ask for contents too")
    out = {}
    sources, content = _clip_fields(manifest, "source_id", "content")
    for label, runs in groups.items():
        per_run = []
        for run in runs:
            if progress:
                progress(f"{label}: {run}")
            per_run.append(run_scores(run, manifest, split, logo_game=logo_game, crops=crops, crop_mode=crop_mode,
                                      sources=sources, clip_progress=clip_progress, checkpoint=checkpoint))
        names = METRICS + tuple(m for m in SOURCE_METRICS if all(m in r.metrics for r in per_run))
        values = {m: np.array([r.metrics[m] for r in per_run]) for m in names}
        out[label] = {
            "runs": [{"run": str(r.run_dir), **r.metrics} for r in per_run],
            "mean": {m: float(np.mean(v)) for m, v in values.items()},
            "std": {m: float(np.std(v, ddof=1)) if len(v) > 1 else float("nan") for m, v in values.items()},
            "clips": len(per_run[0].clip_ids),
        }
        if contents:
            scored = None
            if pristine:
                scored = [run_pristine(run, manifest, split, logo_game=logo_game, crops=crops, crop_mode=crop_mode,
                                       checkpoint=checkpoint) for run in runs]
            out[label]["contents"] = group_contents(per_run, manifest, content, scored, sources)
    return out
