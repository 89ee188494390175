"""Performance metrics as small named objects, bootstrap confidence intervals, and the result table.

In the spirit of vmaf's perf_metric classes: each :class:`PerfMetric` knows its name, its function on
one pair of score vectors, its vectorised form for the bootstrap, and whether higher is better.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from gameqa.errors import GameQAError
from gameqa.evaluate import metrics
from gameqa.evaluate.logistic import fit_logistic


@dataclass(frozen=True)
class PerfMetric:
    """One agreement measure between predictions and labels."""

    name: str
    func: Callable[[np.ndarray, np.ndarray], float]
    rows_func: Callable[[np.ndarray, np.ndarray], np.ndarray]
    higher_is_better: bool
    rank_based: bool  # unchanged by a monotonic mapping of the predictions

    def __call__(self, pred, labels) -> float:
        return self.func(pred, labels)


PERF_METRICS: dict[str, PerfMetric] = {
    "SROCC": PerfMetric("SROCC", metrics.srocc, metrics.srocc_rows, True, True),
    "KROCC": PerfMetric("KROCC", metrics.krocc, metrics.krocc_rows, True, True),
    "PLCC": PerfMetric("PLCC", metrics.plcc, metrics.plcc_rows, True, False),
    "RMSE": PerfMetric("RMSE", metrics.rmse, metrics.rmse_rows, False, False),
}


def bootstrap_ci(metric: PerfMetric, pred, labels, *, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``metric``: resample items with replacement ``n_boot`` times.

    Deterministic for a given ``seed``. Resamples whose metric is undefined (e.g. all-equal picks) are
    dropped; if none is left the interval is (NaN, NaN).
    """
    p, y = metrics.as_pair(pred, labels)
    if n_boot < 1:
        raise GameQAError(None, f"n_boot must be at least 1, got {n_boot}")
    if not 0.0 < level < 1.0:
        raise GameQAError(None, f"confidence level must be between 0 and 1, got {level}")
    rng = np.random.default_rng(seed)
    values = []
    chunk = max(1, 2_000_000 // p.size)  # keep each (chunk, n) index block a few MB
    for start in range(0, n_boot, chunk):
        picks = rng.integers(0, p.size, size=(min(chunk, n_boot - start), p.size))
        values.append(metric.rows_func(p[picks], y[picks]))
    boot = np.concatenate(values)
    boot = boot[np.isfinite(boot)]
    if boot.size == 0:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(boot, [tail, 100.0 - tail])
    return float(low), float(high)


def correlation_table(pred, labels, *, logistic: bool = True, bootstrap: int = 1000, seed: int = 0,
                      metric_names: tuple[str, ...] = ("SROCC", "KROCC", "PLCC", "RMSE")) -> list[dict]:
    """Rows ``{"metric", "value", "ci_low", "ci_high", "mapped"}`` for each metric, raw then mapped.

    With ``logistic=True`` every metric is also reported on logistic-mapped predictions (mapped=True;
    SROCC/KROCC come out the same as raw, since the curve is monotonic). The mapping is fitted once on
    all items; the bootstrap then resamples (mapped prediction, label) pairs. ``bootstrap=0`` gives NaN
    intervals. If the logistic cannot be fitted (constant input, too few items), mapped rows hold NaN.
    """
    p, y = metrics.as_pair(pred, labels)
    unknown = [name for name in metric_names if name not in PERF_METRICS]
    if unknown:
        raise GameQAError(None, f"unknown metric {unknown[0]!r}; choose from {', '.join(PERF_METRICS)}")
    variants: list[tuple[bool, np.ndarray | None]] = [(False, p)]
    if logistic:
        try:
            mapped_pred = fit_logistic(p, y)(p)
        except GameQAError:
            mapped_pred = None
        variants.append((True, mapped_pred))
    rows = []
    for mapped, values in variants:
        for offset, name in enumerate(metric_names):
            metric = PERF_METRICS[name]
            if values is None:
                value = low = high = float("nan")
            else:
                value = metric(values, y)
                if bootstrap > 0:
                    # Same seed per metric so raw and mapped rows resample the same items.
                    low, high = bootstrap_ci(metric, values, y, n_boot=bootstrap, seed=seed)
                else:
                    low = high = float("nan")
            rows.append({"metric": name, "value": value, "ci_low": low, "ci_high": high, "mapped": mapped})
    return rows


def print_table(rows: list[dict], *, title: str | None = None, console=None) -> None:
    """Print a correlation table with rich: one line per metric, raw and logistic-mapped columns."""
    from gameqa.console import Table, console as plain_console

    def cell(row: dict | None) -> str:
        if row is None or not np.isfinite(row["value"]):
            return "n/a"
        text = f"{row['value']:.4f}"
        if np.isfinite(row["ci_low"]):
            text += f"  [{row['ci_low']:.4f}, {row['ci_high']:.4f}]"
        return text

    names = list(dict.fromkeys(row["metric"] for row in rows))
    by_key = {(row["metric"], row["mapped"]): row for row in rows}
    has_mapped = any(row["mapped"] for row in rows)
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("raw  [95% CI]", justify="right")
    if has_mapped:
        table.add_column("logistic-mapped  [95% CI]", justify="right")
    for name in names:
        cells = [name, cell(by_key.get((name, False)))]
        if has_mapped:
            cells.append(cell(by_key.get((name, True))))
        table.add_row(*cells)
    (console or plain_console()).print(table)


def content_rich_table(rows: list[dict], *, title: str, pristine: bool = False, key: str = "content"):
    """A rich table of ``gameqa.evaluate.runs.content_table`` rows (with ``pristine``: their pristine column);
    ``key`` heads the first column (what the rows are: content, codec, ...)."""
    from gameqa.console import Table

    table = Table(title=title)
    table.add_column(key, overflow="fold")  # long level names wrap instead of being cut
    for name in ("clips", "mean MOS", "mean prediction", "offset", "SROCC inside") + (
            ("pristine source",) if pristine else ()):
        table.add_column(name, justify="right")
    for row in rows:
        inside = row["srocc"]
        table.add_row(row["content"], str(row["clips"]), f"{row['mos']:.2f}", f"{row['prediction']:.2f}",
                      f"{row['offset']:+.2f}", "-" if inside != inside else f"{inside:.3f}",
                      *([f"{row['pristine']:.2f}"] if pristine else []))
    return table
