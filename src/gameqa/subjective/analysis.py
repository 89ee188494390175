"""MOS with Student-t intervals, ITU-R BT.500 observer screening, the trainers' manifest."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from gameqa.errors import ConfigError, GameQAError
from gameqa.subjective.votes import VoteTable

__all__ = ["MosResult", "ScreeningResult", "mos", "bt500_screen", "write_manifest",
           "print_mos_table"]


@dataclass(frozen=True)
class MosResult:
    """Per-stimulus mean opinion score, sample std (ddof=1), vote count and CI bounds."""

    stimulus_ids: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    n: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    confidence: float = 0.95


def mos(table: VoteTable, confidence: float = 0.95) -> MosResult:
    """MOS per stimulus with a two-sided Student-t interval: mean +- t(n-1) * std / sqrt(n).

    Missing votes are skipped. A stimulus with one vote has NaN std and interval; one with
    none has NaN mean.
    """
    if not 0.0 < confidence < 1.0:
        raise ConfigError(None, f"confidence must lie in (0, 1), not {confidence}")
    present = ~np.isnan(table.scores)
    n = present.sum(axis=1)
    totals = np.where(present, table.scores, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, totals / np.maximum(n, 1), np.nan)
        squares = np.where(present, (table.scores - mean[:, None]) ** 2, 0.0).sum(axis=1)
        std = np.where(n > 1, np.sqrt(squares / np.maximum(n - 1, 1)), np.nan)
        t_quantile = np.where(n > 1, stats.t.ppf(0.5 + confidence / 2.0, np.maximum(n - 1, 1)),
                              np.nan)
        half_width = t_quantile * std / np.sqrt(np.maximum(n, 1))
    return MosResult(table.stimulus_ids, mean, std, n.astype(np.int64), mean - half_width,
                     mean + half_width, confidence)


@dataclass(frozen=True)
class ScreeningResult:
    """Outcome of BT.500 screening: who was rejected, the counts behind it, the MOS after.

    ``p_counts``/``q_counts`` count each observer's votes above/below the outlier bounds;
    ``ratio`` is (P+Q)/J with J the number of stimuli, ``balance`` is |P-Q|/(P+Q)
    (NaN when P+Q is 0). ``kurtosis`` is each stimulus's beta2 (Pearson, biased).
    """

    rejected_observer_ids: tuple[str, ...]
    observer_ids: tuple[str, ...]
    p_counts: np.ndarray
    q_counts: np.ndarray
    ratio: np.ndarray
    balance: np.ndarray
    kurtosis: np.ndarray
    table: VoteTable
    mos: MosResult


def bt500_screen(table: VoteTable, *, reject_ratio: float = 0.05, balance_limit: float = 0.3,
                 unanimous_counts_as_outlier: bool = False,
                 confidence: float = 0.95) -> ScreeningResult:
    """ITU-R BT.500 (Annex 1, 2.3.1) observer screening, then the MOS of those kept.

    Per stimulus j: mean, population std s_j and kurtosis beta2_j of its votes; the
    bound is 2*s_j when 2 <= beta2_j <= 4 (near normal), else sqrt(20)*s_j. A vote at or
    above mean + bound counts to the observer's P, at or below mean - bound to Q. An
    observer is rejected when (P+Q)/J > reject_ratio and |P-Q|/(P+Q) < balance_limit, J
    being the number of stimuli. If every observer would go, none is rejected.

    A stimulus whose votes all agree has no spread; by default it counts nobody. With
    ``unanimous_counts_as_outlier`` it counts every voter to both P and Q, as a literal
    reading of the recommendation does and as sureal's implementation does.
    """
    scores = table.scores
    num_stimuli, num_observers = scores.shape
    p_counts = np.zeros(num_observers, dtype=np.int64)
    q_counts = np.zeros(num_observers, dtype=np.int64)
    kurtosis = np.full(num_stimuli, np.nan)
    for j in range(num_stimuli):
        voted = ~np.isnan(scores[j])
        votes = scores[j, voted]
        if votes.size == 0:
            continue
        mean = votes.mean()
        deviations = votes - mean
        variance = np.mean(deviations ** 2)
        spread = math.sqrt(variance)
        if variance > 0.0:
            kurtosis[j] = np.mean(deviations ** 4) / variance ** 2
        elif not unanimous_counts_as_outlier:
            continue
        # same rounding-safe comparison whether or not the spread is zero
        factor = 2.0 if 2.0 <= kurtosis[j] <= 4.0 else math.sqrt(20.0)
        high = votes >= mean + factor * spread
        low = votes <= mean - factor * spread
        p_counts[np.flatnonzero(voted)[high]] += 1
        q_counts[np.flatnonzero(voted)[low]] += 1
    outliers = p_counts + q_counts
    ratio = outliers / float(num_stimuli)
    with np.errstate(invalid="ignore", divide="ignore"):
        balance = np.abs(p_counts - q_counts) / outliers.astype(np.float64)
        rejected = (ratio > reject_ratio) & (balance < balance_limit)
    if rejected.all():
        rejected[:] = False
    rejected_ids = tuple(o for o, r in zip(table.observer_ids, rejected) if r)
    kept = table.without_observers(rejected_ids)
    return ScreeningResult(rejected_ids, table.observer_ids, p_counts, q_counts, ratio,
                           balance, kurtosis, kept, mos(kept, confidence))


def _manifest_rows(result) -> tuple[list[str], list[list]]:
    """Columns and rows for a MosResult, a ScreeningResult or a SubjectModelResult."""
    model = None
    if isinstance(result, MosResult):
        summary = result
    elif isinstance(result, ScreeningResult):
        summary = result.mos
    elif hasattr(result, "quality") and hasattr(result, "mos"):
        summary, model = result.mos, result
    else:
        raise ConfigError(None, f"cannot write a manifest from a {type(result).__name__}")
    columns = ["stimulus", "mean", "std", "n", "ci_low", "ci_high"]
    if model is not None:
        columns += ["quality", "quality_std", "quality_ci_low", "quality_ci_high"]
        if model.stimulus_ambiguity is not None:
            columns += ["ambiguity"]
    rows = []
    for j, stimulus in enumerate(summary.stimulus_ids):
        row = [stimulus, summary.mean[j], summary.std[j], int(summary.n[j]), summary.ci_low[j],
               summary.ci_high[j]]
        if model is not None:
            row += [model.quality[j], model.quality_std[j], model.quality_ci_low[j],
                    model.quality_ci_high[j]]
            if model.stimulus_ambiguity is not None:
                row += [model.stimulus_ambiguity[j]]
        rows.append(row)
    return columns, rows


def _cell(value) -> str:
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "" if math.isnan(value) else f"{float(value):.6g}"
    return str(value)


def write_manifest(result, path: str | os.PathLike) -> Path:
    """Write the per-stimulus manifest the trainers read: stimulus, mean, std, n, ci_low,
    ci_high, plus quality (with std and CI) and ambiguity when a subject model gave them.
    Undefined values (e.g. the std of one vote) are left empty. Written in one step: a failed
    write leaves no file (and an older manifest at ``path`` as it was).
    """
    from gameqa.csvio import csv_text
    from gameqa.sinks import write_atomic

    path = Path(path)
    columns, rows = _manifest_rows(result)
    try:
        write_atomic(csv_text(columns, (dict(zip(columns, map(_cell, row))) for row in rows)), str(path))
    except GameQAError as exc:
        raise ConfigError(path, f"the manifest: {exc.problem}") from None
    return path


def print_mos_table(result, console=None, title: str | None = None) -> None:
    """Print a result's per-stimulus table with rich (the manifest's columns)."""
    from gameqa.console import Table, console as plain_console

    columns, rows = _manifest_rows(result)
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="left" if column == "stimulus" else "right")
    for row in rows:
        table.add_row(*[_cell(v) if not isinstance(v, (float, np.floating)) or math.isnan(v)
                        else f"{float(v):.3f}" for v in row])
    (console or plain_console()).print(table)
    if isinstance(result, ScreeningResult):
        rejected = ", ".join(result.rejected_observer_ids) or "none"
        (console or plain_console()).print(f"BT.500 rejected observers: {rejected}")
