"""``gameqa bench all``: gameqa against its peers in one report, every number measured in the run that writes it.

The report folder holds ``report.md``, ``report.html`` (the same blocks, rendered twice), PNG plots made with
matplotlib and ``results.json`` with every number (per-clip predictions included). Sections:

* accuracy on the corpus test split of every registered model (``gameqa.models.registry.list_models``), the
  ERAQUE teacher and student model folders, and VMAF read from the manifest (the labels are made from VMAF, so
  its correlation is about 1 by construction): SROCC, KROCC, PLCC, RMSE with 95% bootstrap intervals
  (``gameqa.evaluate.correlation_table``) and a scatter plot per model;
* leave-one-game-out: the runs ``eraque-logo-<game>`` (``--logo-runs``: another pattern, a glob for several seeds,
  whose mean is shown; ``gameqa.evaluate.runs.run_scores``), each checked to have held its game out, next to the
  classical peers and VMAF on the same clips;
* the hard-ranking-loss ablation and distillation as groups of runs over seeds (``compare_groups``), and the
  accuracy / speed trade-off (speed from ``gameqa.bench.models``);
* the aesthetic model (numbers from an ``eval-aesthetic --json`` file when given, else a link) and, apart,
  published figures of reference systems on their own data (``published.toml``).

Missing inputs (no run folders, a model that cannot be built) become one-line notes. The report is written into
a temporary folder and renamed at the end: a failed run leaves no partial report. ``--quick`` scores a few clips
per game with few bootstrap resamples, and never writes into run folders.
"""
from __future__ import annotations

import html
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import numpy as np
import typer

from gameqa.console import fail, log_line
from gameqa.errors import ConfigError, GameQAError
from gameqa.sinks import check_replaceable, make_folder, replace_folder

SPLIT = "test"
ABLATION_GROUPS = (("L1 + hard rank (default)", "abl-default-s*"), ("L1 only (ablation)", "abl-ablation_l1-s*"))
DISTILL_GROUPS = (("student, distilled", "eraque-student-s*"), ("student, no distillation", "eraque-student-plain-s*"))
LOGO_PREFIX = "eraque-logo-"
AESTHETIC_DOC = "docs/models/clive-quality-spread.md"
SPEED_KEY = "720p_1t"
Log = Callable[[str], None]


# --------------------------------------------------------------------------------------------------------------
# Formatting: one set of functions for report.md, report.html and the README table, so they cannot disagree.

def fmt(value, digits: int = 3) -> str:
    """A number as the report prints it (``n/a`` for a missing or undefined value)."""
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "n/a"
    return f"{value:.{digits}f}"


def fmt_ci(row: Optional[dict], digits: int = 3) -> str:
    """``value [low, high]`` of a correlation-table row (the interval only when it was computed)."""
    if row is None:
        return "n/a"
    text = fmt(row.get("value"), digits)
    low, high = row.get("ci_low"), row.get("ci_high")
    if text != "n/a" and low is not None and high is not None and math.isfinite(low) and math.isfinite(high):
        text += f" [{fmt(low, digits)}, {fmt(high, digits)}]"
    return text


def fmt_sd(mean, sd, digits: int = 3) -> str:
    return f"{fmt(mean, digits)} ± {fmt(sd, digits)}"


def _clean(value):
    """JSON-safe copy: NaN/inf become null, numpy scalars plain numbers, paths strings."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Path):
        return str(value)
    return value


# --------------------------------------------------------------------------------------------------------------
# Document blocks rendered as Markdown and HTML.

@dataclass
class Doc:
    """An ordered list of blocks: headings, paragraphs, notes, tables and images."""

    blocks: list = field(default_factory=list)

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def note(self, text: str) -> None:
        self.blocks.append(("note", text))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        self.blocks.append(("table", list(header), [list(r) for r in rows]))

    def img(self, name: str, alt: str) -> None:
        self.blocks.append(("img", name, alt))

    def markdown(self) -> str:
        out = []
        for block in self.blocks:
            kind = block[0]
            if kind == "h":
                out.append("#" * block[1] + " " + block[2])
            elif kind == "p":
                out.append(block[1])
            elif kind == "note":
                out.append(f"> Note: {block[1]}")
            elif kind == "table":
                out.append(markdown_table(block[1], block[2]))
            elif kind == "img":
                out.append(f"![{block[2]}]({block[1]})")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        parts = [f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>",
                 "<style>body{font-family:sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;line-height:1.4}"
                 "table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #bbb;padding:.25rem .5rem;"
                 "text-align:right}td:first-child,th:first-child{text-align:left}th{background:#eee}"
                 ".note{background:#fff6d6;border-left:4px solid #e0b000;padding:.4rem .8rem}img{max-width:100%}"
                 "</style></head><body>"]
        for block in self.blocks:
            kind = block[0]
            if kind == "h":
                parts.append(f"<h{block[1]}>{html.escape(block[2])}</h{block[1]}>")
            elif kind == "p":
                parts.append(f"<p>{html.escape(block[1])}</p>")
            elif kind == "note":
                parts.append(f"<p class=\"note\">Note: {html.escape(block[1])}</p>")
            elif kind == "table":
                head = "".join(f"<th>{html.escape(c)}</th>" for c in block[1])
                body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                               for row in block[2])
                parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            elif kind == "img":
                parts.append(f"<p><img src=\"{html.escape(block[1])}\" alt=\"{html.escape(block[2])}\"></p>")
        parts.append("</body></html>\n")
        return "\n".join(parts)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------
# Scoring clips once per (model, clip) in a report run.

def _spread_pick(rows: list[dict], count: int) -> list[dict]:
    """``count`` rows spread evenly over the MOS range (deterministic), or all when there are few."""
    if len(rows) <= count:
        return list(rows)
    ordered = sorted(rows, key=lambda r: (r["mos"], r["clip_id"]))
    picks = np.unique(np.round(np.linspace(0, len(ordered) - 1, count)).astype(int))
    return [ordered[i] for i in picks]


class Predictor:
    """Clip predictions of models and checkpoints, each (model, clip) scored once per report run.

    Clips are scored through ``gameqa.train.evaluation.evaluate_split`` on a small temporary manifest of just the
    clips still missing, so registry models, model folders and checkpoints see the same frames as ``gameqa eval``.
    With a ``store`` folder, predictions are also kept on disk per model identity (weights digest, version, frame
    policy) and clip (id + file digest), written after every ``chunk`` clips: an interrupted report resumes where
    it stopped, and a rerun scores only new models or clips.
    """

    def __init__(self, corpus_root: Path, work: Path, frames_cache: Optional[Path], log: Log,
                 sample: Optional[str] = None, store: Optional[Path] = None, chunk: int = 64):
        self.corpus_root = corpus_root
        self.sample = sample
        self.work = work
        self.frames_cache = frames_cache
        self.log = log
        self.store = store
        self.chunk = max(2, int(chunk))
        self.memo: dict[str, dict[str, float]] = {}
        self.seconds: dict[str, float] = {}
        self.reused: dict[str, int] = {}
        self._made = 0
        self._identity: dict[str, str] = {}

    def identity(self, model: str) -> str:
        """What a stored prediction depends on: the model's weights (digest) and version, and the frame policy."""
        if model not in self._identity:
            from gameqa.data.corpus import file_digest
            from gameqa.models.registry import get_card

            if model.endswith(".pt"):
                what = f"checkpoint {file_digest(model)}"
            else:
                card = get_card(model)
                weights = file_digest(card.weights) if card.weights and Path(card.weights).is_file() else "-"
                what = f"model {card.name} {card.version} {card.engine} {weights} {card.pooling}"
            self._identity[model] = f"{what} | sample {self.sample or 'own'}"
        return self._identity[model]

    def _store_file(self, model: str) -> Path:
        import hashlib

        return self.store / f"{hashlib.sha1(self.identity(model).encode()).hexdigest()[:20]}.json"

    @staticmethod
    def _clip_key(row: dict) -> str:
        from gameqa.data.corpus import file_digest

        return f"{row['clip_id']}:{file_digest(row['abs_path'], 16)}"

    def _load(self, model: str) -> dict[str, float]:
        """Stored predictions of ``model`` keyed by clip id + clip file digest (none without a store)."""
        if self.store is None:
            return {}
        path = self._store_file(model)
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        return saved.get("clips", {}) if saved.get("identity") == self.identity(model) else {}

    def _save(self, model: str, stored: dict[str, float]) -> None:
        if self.store is None:
            return
        from gameqa.sinks import write_atomic

        try:
            self.store.mkdir(parents=True, exist_ok=True)
            write_atomic(json.dumps({"identity": self.identity(model), "clips": stored}, indent=0) + "\n",
                         self._store_file(model))
        except OSError as exc:
            raise ConfigError(self.store, f"cannot write the prediction store ({exc.strerror or exc})") from None

    def predict(self, model: str, rows: list[dict]) -> list[float]:
        """Clip predictions in the order of ``rows``; a store keeps them across runs (resumable in chunks)."""
        from gameqa.data.manifest import write_manifest
        from gameqa.train.evaluation import evaluate_split

        memo = self.memo.setdefault(model, {})
        stored = self._load(model)
        for r in rows:
            key = self._clip_key(r) if stored and r["clip_id"] not in memo else None
            if key in stored:
                memo[r["clip_id"]] = float(stored[key])
                self.reused[model] = self.reused.get(model, 0) + 1
        todo = [r for r in rows if r["clip_id"] not in memo]
        if todo:
            self.log(f"scoring {len(todo)} clips with {model}")
        for at in range(0, len(todo), self.chunk):
            part = todo[at:at + self.chunk]
            if len(part) == 1:  # a correlation table needs two clips: add one more
                part += [r for r in rows if r["clip_id"] != part[0]["clip_id"]][:1]
            self._made += 1
            manifest = self.work / "manifests" / f"clips-{self._made}.csv"
            write_manifest([{**r, "split": SPLIT} for r in part], manifest)
            start = time.perf_counter()
            ev = evaluate_split(model, manifest, SPLIT, root=str(self.corpus_root), sample=self.sample,
                                frames_cache=str(self.frames_cache) if self.frames_cache else None, bootstrap=0)
            self.seconds[model] = self.seconds.get(model, 0.0) + time.perf_counter() - start
            memo.update(zip(ev.clip_ids, (float(v) for v in ev.predictions)))
            if self.store is not None:
                by_id = {r["clip_id"]: r for r in part}
                stored.update({self._clip_key(by_id[c]): memo[c] for c in ev.clip_ids})
                self._save(model, stored)
        return [memo[r["clip_id"]] for r in rows]


# --------------------------------------------------------------------------------------------------------------

@dataclass
class ReportOptions:
    """What ``bench all`` measures and where it finds its inputs."""

    manifest: Path
    root: Optional[Path] = None
    runs_dir: Optional[Path] = None
    teacher: Optional[Path] = None
    students: List[Path] = field(default_factory=list)
    models: Optional[List[str]] = None  # registry names; None: every registered model
    quick: bool = False
    quick_clips: int = 4  # with quick: clips per game of each section
    bootstrap: Optional[int] = None  # default 1000, quick 100
    frames_cache: Optional[Path] = None
    sample: Optional[str] = None  # frame policy for every model (default: each model's own; quick only)
    aesthetic_json: Optional[Path] = None
    speed: bool = True
    speed_repeats: Optional[int] = None  # default 5, quick 2
    seed: int = 0
    store: Optional[Path] = None  # keeps clip predictions across runs (a rerun scores only what is new)
    logo_runs: str = LOGO_PREFIX + "{game}"  # leave-one-game-out run folders under runs_dir; a glob for seeds
    logo_crop_mode: Optional[str] = None  # grid | texture; None: each run's own


@dataclass
class Entry:
    """One scorer in the accuracy section."""

    key: str
    label: str
    model: Optional[str]  # registry name, model folder, or None for the manifest's VMAF column
    kind: str
    lower_better: bool = False
    full_reference: bool = False


def _model_entries(opts: ReportOptions, notes: list[str]) -> list[Entry]:
    from gameqa.models.registry import get_card, list_models

    entries = []
    cards = list_models()
    names = [c.name for c in cards]
    wanted = opts.models if opts.models is not None else names
    for name in wanted:
        if name not in names and (Path(name) / "model.json").is_file():  # a model folder, e.g. the FR variant
            try:
                card = get_card(name)
            except GameQAError as exc:
                notes.append(f"model folder {name} not scored: {exc}")
                continue
            kind = ("full-reference" if card.full_reference else "no-reference") + ", gameqa (learned)"
            entries.append(Entry(f"folder:{Path(name).resolve()}", f"{card.name} v{card.version} (folder)", name, kind,
                                 card.lower_better, card.full_reference))
            continue
        if name not in names:
            notes.append(f"model {name!r} is not registered here; skipped")
            continue
        card = next(c for c in cards if c.name == name)
        kind = ("full-reference" if card.full_reference else "no-reference") + \
               (", classical" if card.engine == "numpy" else ", learned")
        entries.append(Entry(f"registry:{name}", name, name, kind, card.lower_better, card.full_reference))
    folders = [("teacher", "ERAQUE teacher", opts.teacher)] + \
              [(f"student:{i}", f"ERAQUE student {Path(s).name}", s) for i, s in enumerate(opts.students)]
    for key, label, folder in folders:
        if folder is None:
            continue
        try:
            card = get_card(str(folder))
        except GameQAError as exc:
            notes.append(f"{label} not scored: {exc}")
            continue
        kind = ("full-reference" if card.full_reference else "no-reference") + ", gameqa (learned)"
        entries.append(Entry(key, f"{label} ({card.name} v{card.version})", str(folder), kind, card.lower_better,
                             card.full_reference))
    entries.append(Entry("vmaf", "VMAF v0.6.1 (libvmaf, from the manifest)", None,
                         "full-reference; the labels are made from it", False, True))
    return entries


def _table_by_key(table: list[dict]) -> dict[str, dict]:
    return {f"{r['metric']}{'_mapped' if r['mapped'] else ''}": r for r in table}


ACCURACY_HEADER = ["model", "reference", "SROCC [95% CI]", "KROCC [95% CI]", "PLCC [95% CI]",
                   "PLCC logistic [95% CI]", "RMSE logistic (MOS) [95% CI]"]


def accuracy_rows(accuracy: dict) -> list[list[str]]:
    """The accuracy table's rows from ``results["accuracy"]`` (also used for the README table)."""
    rows = []
    for res in accuracy["models"].values():
        t = res["table"]
        label = res["label"] + (" (sign flipped: lower is better)" if res["sign_flipped"] else "")
        if res["key"] == "vmaf":
            label += " — labels = clip(VMAF/20, 1, 5): ~1 by construction"
        rows.append([label, res["kind"], fmt_ci(t.get("SROCC")), fmt_ci(t.get("KROCC")), fmt_ci(t.get("PLCC")),
                     fmt_ci(t.get("PLCC_mapped")), fmt_ci(t.get("RMSE_mapped"))])
    return rows


def _scatter_plot(path: Path, panels: list[tuple[str, list[float], list[float], str]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False)
    for ax, (label, x, y, caption) in zip(axes.flat, panels):
        ax.scatter(x, y, s=12, alpha=0.7)
        ax.set_title(f"{label}\n{caption}", fontsize=9)
        ax.set_xlabel("prediction (model's own scale)", fontsize=8)
        ax.set_ylabel("label (MOS 1-5)", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _bar_plot(path: Path, groups: list[str], series: dict[str, list[float]], errors: Optional[dict] = None,
              ylabel: str = "SROCC", title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(groups) * max(1, len(series)) / 2 + 3), 3.8))
    width = 0.8 / max(1, len(series))
    x = np.arange(len(groups))
    for k, (name, values) in enumerate(series.items()):
        # An undefined value (no pairs, one seed) draws no bar and no error bar, never a zero.
        vals = [v if v is not None and math.isfinite(v) else np.nan for v in values]
        err = None
        if errors and name in errors:
            err = [e if e is not None and math.isfinite(e) else np.nan for e in errors[name]]
        ax.bar(x + (k - (len(series) - 1) / 2) * width, vals, width, yerr=err, capsize=3, label=name)
    ax.set_xticks(x)
    ax.set_xticklabels(groups, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _tradeoff_plot(path: Path, points: list[tuple[str, float, float]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    for label, ms, rho in points:
        ax.scatter([ms], [rho], s=30)
        ax.annotate(label, (ms, rho), fontsize=7, xytext=(4, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("ms per 720p frame, 1 ONNX Runtime / numpy thread (best of repeats; log scale)")
    ax.set_ylabel("SROCC, test split (this run)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# --------------------------------------------------------------------------------------------------------------
# Sections

def _section_accuracy(doc: Doc, out: Path, opts: ReportOptions, pred: Predictor, test_rows: list[dict],
                      bootstrap: int, log: Log) -> dict:
    from gameqa.evaluate import correlation_table

    notes: list[str] = []
    entries = _model_entries(opts, notes)
    mos = [r["mos"] for r in test_rows]
    result = {"split": SPLIT, "clips": len(test_rows), "sources": len({r["source_id"] for r in test_rows}),
              "bootstrap": bootstrap, "clip_ids": [r["clip_id"] for r in test_rows], "mos": mos, "models": {},
              "notes": notes}
    panels = []
    for entry in entries:
        try:
            raw = [r["vmaf"] for r in test_rows] if entry.model is None else pred.predict(entry.model, test_rows)
        except GameQAError as exc:
            notes.append(f"{entry.label} not scored: {exc}")
            continue
        signed = [-v for v in raw] if entry.lower_better else list(raw)
        table = correlation_table(signed, mos, bootstrap=bootstrap, seed=opts.seed)
        by_key = _table_by_key(table)
        result["models"][entry.key] = {
            "key": entry.key, "label": entry.label, "model": entry.model, "kind": entry.kind,
            "full_reference": entry.full_reference, "lower_better": entry.lower_better,
            "sign_flipped": entry.lower_better, "clips": len(test_rows), "table": by_key, "predictions": raw,
            "score_seconds": pred.seconds.get(entry.model) if entry.model else None,
        }
        panels.append((entry.label, raw, mos, f"SROCC {fmt(by_key['SROCC']['value'])} ({entry.kind})"))
    doc.h(2, "Accuracy on the corpus test split")
    doc.p(f"Split: {SPLIT}, {len(test_rows)} clips from {result['sources']} sources"
          f"{' (quick subset)' if opts.quick else ''}"
          f"{f', every model on frames sampled {opts.sample}' if opts.sample else ''}. Labels are objective MOS-like scores, clip(VMAF / 20, 1, 5), "
          f"not human ratings. Intervals: 95% percentile bootstrap over clips, {bootstrap} resamples. "
          "'logistic' columns use the 4-parameter logistic mapping fitted on these clips. Scores of lower-is-better "
          "models are negated before the correlations.")
    doc.p("Full-reference models need the pristine source and are not peers of a no-reference model in use; they "
          "are listed as references. VMAF is the label itself up to clipping, so its correlation is about 1 by "
          "construction and says nothing about VMAF's quality.")
    if result["models"]:
        doc.table(ACCURACY_HEADER, accuracy_rows(result))
        _scatter_plot(out / "scatter_test.png", panels, f"prediction vs label, {SPLIT} split, {len(test_rows)} clips")
        doc.img("scatter_test.png", "prediction vs label per model")
    for n in notes:
        doc.note(n)
    return result


def _run_folders(runs_dir: Optional[Path], pattern: str) -> tuple[list[Path], list[Path]]:
    """(finished runs with best.pt, unfinished folders: no best.pt yet, or training stopped before its last step)
    matching ``pattern`` under ``runs_dir``."""
    from gameqa.evaluate.runs import training_state

    def finished(run: Path) -> bool:
        try:
            return (run / "best.pt").is_file() and training_state(run)["finished"]
        except GameQAError:  # an unreadable last.pt: not a run to report
            return False

    if runs_dir is None or not runs_dir.is_dir():
        return [], []
    done, unfinished = [], []
    for folder in sorted(p for p in runs_dir.glob(pattern) if p.is_dir()):
        (done if finished(folder) else unfinished).append(folder)
    return done, unfinished


def _unfinished_note(label: str, unfinished: list[Path]) -> str:
    return (f"{label}: {len(unfinished)} unfinished run folder(s) skipped (no best.pt, or training stopped before "
            f"its last step) ({', '.join(p.name for p in unfinished)})")


def _aggregate(per_run: list[tuple[Path, dict]], clips: int) -> dict:
    """The shape of ``compare_groups``' result for one group, from per-run metrics."""
    from gameqa.evaluate.runs import METRICS

    values = {m: np.array([r[m] for _, r in per_run], dtype=np.float64) for m in METRICS}
    return {"runs": [{"run": str(p), **r} for p, r in per_run],
            "mean": {m: float(np.mean(v)) for m, v in values.items()},
            "std": {m: float(np.std(v, ddof=1)) if len(v) > 1 else float("nan") for m, v in values.items()},
            "clips": clips}


def _signed_metrics(pred_values: list[float], mos: list[float], lower_better: bool) -> dict:
    from gameqa.evaluate.runs import split_metrics

    return split_metrics([-v for v in pred_values] if lower_better else pred_values, mos)


def _logo_table(values: list[float], mos: list[float], lower_better: bool, bootstrap: int, seed: int) -> dict:
    from gameqa.evaluate import correlation_table

    signed = [-v for v in values] if lower_better else list(values)
    return _table_by_key(correlation_table(signed, mos, bootstrap=bootstrap, seed=seed))


def _held_out(run_dir: Path) -> str:
    """The game a run left out (its config.json), or a description of why that cannot be read."""
    from gameqa.evaluate.logo import held_out_game

    try:
        return held_out_game(run_dir)
    except GameQAError as exc:
        return f"unknown ({exc})"


def _logo_runs(opts: ReportOptions, game: str, notes: list[str]) -> list[Path]:
    """The finished runs that stand for ``game`` held out: folders matching ``opts.logo_runs`` (``{game}`` filled
    in) whose own config.json left that game out; the others are named in ``notes``."""
    pattern = opts.logo_runs.replace("{game}", game)
    done, unfinished = _run_folders(opts.runs_dir, pattern)
    if unfinished:
        notes.append(_unfinished_note(game, unfinished))
    kept = []
    for run_dir in done:
        if (left_out := _held_out(run_dir)) != game:
            notes.append(f"{game}: {run_dir} is not used: it trained with data.logo_game = {left_out!r}, so it "
                         f"saw {game}")
        else:
            kept.append(run_dir)
    if not done:
        notes.append(f"{game}: no finished leave-one-game-out run ({opts.runs_dir or '(no runs folder)'}/{pattern}"
                     "/best.pt)")
    return kept


def _section_logo(doc: Doc, out: Path, opts: ReportOptions, pred: Predictor, rows: list[dict], manifest: Path,
                  accuracy: dict, log: Log, bootstrap: int = 1000) -> dict:
    from gameqa.evaluate.logo import summarise_runs
    from gameqa.evaluate.runs import run_scores

    notes: list[str] = []
    game_rows = [r for r in rows if r.get("group", "game") == "game"] or rows
    games = sorted({r["game"] for r in game_rows})
    # Untrained peers only: a learned model trained on every game has seen the held-out game's train clips.
    peers = [m for m in accuracy["models"].values()
             if (m["key"].startswith("registry:") and "classical" in m["kind"]) or m["key"] == "vmaf"]
    result = {"games": {}, "notes": notes, "runs_pattern": opts.logo_runs,
              "crop_mode": (None if opts.quick else opts.logo_crop_mode) or "each run's own",  # quick: best.pt as is
              "peers": [m["key"] for m in peers], "subset": "quick" if opts.quick else "all clips of the game"}
    for game in games:
        clips = [r for r in rows if r["game"] == game]
        if opts.quick:
            clips = _spread_pick([r for r in clips if r["split"] == SPLIT] or clips, opts.quick_clips)
        if len(clips) < 2:
            notes.append(f"{game}: fewer than 2 clips; skipped")
            continue
        mos = [r["mos"] for r in clips]
        entry = {"clips": len(clips), "sources": len({r["source_id"] for r in clips}), "run": None, "peers": {}}
        scored = []
        for run_dir in _logo_runs(opts, game, notes):
            try:
                if opts.quick:
                    run_values, run_mos = pred.predict(str(run_dir / "best.pt"), clips), mos
                    metrics = _signed_metrics(run_values, run_mos, False)
                    n = len(clips)
                else:
                    log(f"leave-one-game-out run {run_dir}")
                    scores = run_scores(run_dir, manifest, SPLIT, logo_game=game, crop_mode=opts.logo_crop_mode)
                    metrics, n = scores.metrics, len(scores.clip_ids)
                    run_values, run_mos = list(scores.predictions), list(scores.mos)
                scored.append({"run": str(run_dir), "clips": n, **metrics,
                               "table": _logo_table(run_values, run_mos, False, bootstrap, opts.seed)})
            except GameQAError as exc:
                notes.append(f"{game}: run {run_dir} not scored: {exc}")
        if scored:
            # Several runs (seeds): the mean over runs, as `bench logo` gives it; each run keeps its own table.
            entry["run"] = {"run": ", ".join(Path(r["run"]).name for r in scored), "clips": scored[0]["clips"],
                            "seeds": len(scored), **summarise_runs(scored), "per_run": scored}
        for peer in peers:
            try:
                values = [r["vmaf"] for r in clips] if peer["key"] == "vmaf" else pred.predict(peer["model"], clips)
                entry["peers"][peer["key"]] = {**_signed_metrics(values, mos, peer["lower_better"]),
                                               "table": _logo_table(values, mos, peer["lower_better"], bootstrap,
                                                                    opts.seed)}
            except GameQAError as exc:
                notes.append(f"{game}: {peer['label']} not scored: {exc}")
        result["games"][game] = entry
    doc.h(2, "Leave one game out")
    doc.p(f"Each ERAQUE run {opts.logo_runs} was trained without that game (its config.json says so); it is "
          "tested on the game's clips "
          f"({'a quick subset of its test-split clips' if opts.quick else 'every clip of the game, all splits'}; "
          f"crops: {result['crop_mode']}). Several runs of a game (seeds): the mean, ± the sd over runs. "
          "The classical peers and VMAF are scored on the same clips (they are not trained). SROCC / PLCC, raw "
          "scores; lower-is-better models negated. VMAF is the label up to clipping.")
    if result["games"]:
        header = ["game", "clips", "ERAQUE (game held out) SROCC / PLCC"] + \
                 [f"{p['label']} SROCC / PLCC" for p in peers]
        table = []
        for game, e in result["games"].items():
            run = e["run"]
            cells = [game, str(e["clips"]), "no run" if run is None else
                     (fmt(run["srocc"]) if run["seeds"] == 1 else fmt_sd(run["srocc"], run["srocc_sd"]))
                     + f" / {fmt(run['plcc'])}"
                     + (f" ({run['seeds']} runs)" if run["seeds"] > 1 else "")]
            for p in peers:
                m = e["peers"].get(p["key"])
                cells.append("n/a" if m is None else f"{fmt(m['srocc'])} / {fmt(m['plcc'])}")
            table.append(cells)
        doc.table(header, table)
        names = ["ERAQUE (held out)"] + [p["label"] for p in peers]
        series = {name: [] for name in names}
        for e in result["games"].values():
            series[names[0]].append(e["run"]["srocc"] if e["run"] else float("nan"))
            for p, name in zip(peers, names[1:]):
                series[name].append(e["peers"].get(p["key"], {}).get("srocc", float("nan")))
        _bar_plot(out / "logo.png", list(result["games"]), series, title="SROCC per held-out game")
        doc.img("logo.png", "SROCC per held-out game")
        doc.p(f"The same, every measure with its 95% percentile bootstrap interval ({bootstrap} resamples over the "
              "game's clips; lower-is-better models negated; 'logistic' as in the accuracy section):")
        long_rows = []
        for game, e in result["games"].items():
            runs = e["run"]["per_run"] if e["run"] else []
            named = [("ERAQUE (game held out)" + (f", {Path(r['run']).name}" if len(runs) > 1 else ""), r)
                     for r in runs] + \
                    [(p["label"], e["peers"].get(p["key"])) for p in peers]
            for label, m in named:
                t = (m or {}).get("table") or {}
                long_rows.append([game, label, fmt_ci(t.get("SROCC")), fmt_ci(t.get("KROCC")), fmt_ci(t.get("PLCC")),
                                  fmt_ci(t.get("PLCC_mapped")), fmt_ci(t.get("RMSE_mapped"))])
        doc.table(["game", "model"] + ACCURACY_HEADER[2:], long_rows)
    for n in notes:
        doc.note(n)
    return result


def _section_quantiser(doc: Doc, out: Path, opts: ReportOptions, manifest: Path, log: Log,
                       bootstrap: int = 1000) -> dict:
    """The quantiser alone (``gameqa bench qp``): the test split and each game held out, no pixel read."""
    from gameqa.evaluate.qp_bench import QPFailures, plot_qp_bench, qp_bench

    doc.h(2, "The quantiser alone (no pixels)")
    doc.p("A least-squares fit per codec of the label on each clip's mean QP (as a share of the codec's top), the "
          "coded height and the measured bitrate (`gameqa bench qp`, `gameqa.models.qp_linear`): fitted on the train "
          "and val splits and read on the test split, then fitted on every other game and read on each game (every "
          "game clip, all splits). Not a pixel model: the yardstick for one on encodes, whose full-reference labels "
          "follow how hard the encoder found the source.")
    log("the quantiser of every game clip")
    try:
        result = qp_bench(manifest, opts.root, bootstrap=bootstrap)
    except QPFailures as exc:
        doc.note(f"not read: {len(exc.problems)} clip(s) have no quantiser, the first: {exc.problems[0]}")
        return {"problems": exc.problems}
    except GameQAError as exc:
        doc.note(f"not read: {exc}")
        return {"error": str(exc)}
    named = ([("test split", "train + val splits", result["test"])] if "test" in result else []) + \
        [(game, "every other game", e) for game, e in result["games"].items()]
    doc.table(["read on", "fitted on", "clips", "SROCC [95% CI]", "PLCC", "RMSE"],
              [[label, fitted, str(e["clips"]), f"{fmt(e['srocc'])} [{fmt(e['srocc_ci'][0])}, {fmt(e['srocc_ci'][1])}]",
                fmt(e["plcc"]), fmt(e["rmse"])] for label, fitted, e in named])
    if result["games"]:
        plot_qp_bench(result, out / "quantiser.png")
        doc.img("quantiser.png", "The quantiser alone, each game held out")
    return result


GROUP_METRICS = ("srocc", "plcc", "krocc", "rmse", "pairs<=0.25", "pairs<=0.5")


def _groups(opts: ReportOptions, pred: Predictor, manifest: Path, test_rows: list[dict], spec, notes: list[str],
            log: Log) -> dict:
    from gameqa.evaluate.runs import compare_groups

    found = {}
    for label, pattern in spec:
        done, unfinished = _run_folders(opts.runs_dir, pattern)
        if unfinished:
            notes.append(_unfinished_note(label, unfinished))
        if not done:
            notes.append(f"{label}: no finished run matches {opts.runs_dir or '(no runs folder)'}/{pattern}")
            continue
        found[label] = done
    if not found:
        return {}
    if not opts.quick:
        return compare_groups(found, manifest, SPLIT, progress=lambda m: log(f"scoring run {m}"))
    mos = [r["mos"] for r in test_rows]
    return {label: _aggregate([(run, _signed_metrics(pred.predict(str(run / "best.pt"), test_rows), mos, False))
                               for run in runs], len(test_rows)) for label, runs in found.items()}


def _group_table(doc: Doc, result: dict) -> None:
    header = ["group", "runs", "clips"] + [f"{m} (mean ± sd)" for m in GROUP_METRICS]
    rows = [[label, str(len(g["runs"])), str(g["clips"])] + [fmt_sd(g["mean"][m], g["std"][m]) for m in GROUP_METRICS]
            for label, g in result.items()]
    doc.table(header, rows)


def _groups_section(doc: Doc, out: Path, opts: ReportOptions, pred: Predictor, manifest: Path,
                    test_rows: list[dict], spec, title: str, text: str, plot: str, log: Log) -> tuple[dict, list, int]:
    """Score a pair of run groups, write their heading, text, table and bar plot; (groups, notes, clips)."""
    notes: list[str] = []
    try:
        groups = _groups(opts, pred, manifest, test_rows, spec, notes, log)
    except GameQAError as exc:
        notes.append(f"{title.lower()} runs not scored: {exc}")
        groups = {}
    doc.h(2, title)
    clips = next(iter(groups.values()))["clips"] if groups else len(test_rows)
    doc.p(f"Split: {SPLIT}, {clips} clips{' (quick subset)' if opts.quick else ''}. {text}")
    if groups:
        _group_table(doc, groups)
        _group_plot(out / f"{plot}.png", groups, title)
        doc.img(f"{plot}.png", f"{title.lower()}: mean ± sd over seeds")
    return groups, notes, clips


def _section_ablation(doc: Doc, out: Path, opts: ReportOptions, pred: Predictor, manifest: Path,
                      test_rows: list[dict], log: Log) -> dict:
    groups, notes, clips = _groups_section(
        doc, out, opts, pred, manifest, test_rows, ABLATION_GROUPS, "Hard-ranking-loss ablation",
        "Runs abl-default-s* (L1 + hard pairwise ranking loss) against abl-ablation_l1-s* (L1 only), mean ± sample "
        "sd over seeds. pairs<=G: share of clip pairs whose MOS differ by at most G (not tied) that the run orders "
        "correctly.", "ablation", log)
    for n in notes:
        doc.note(n)
    return {"split": SPLIT, "clips": clips, "groups": groups, "notes": notes}


def _group_plot(path: Path, groups: dict, title: str) -> None:
    metrics = ["srocc", "plcc", "pairs<=0.25", "pairs<=0.5"]
    series = {label: [g["mean"][m] for m in metrics] for label, g in groups.items()}
    errors = {label: [g["std"][m] for m in metrics] for label, g in groups.items()}
    _bar_plot(path, metrics, series, errors, ylabel="mean over seeds (± sd)", title=title)


def _speed(opts: ReportOptions, accuracy: dict, notes: list[str], log: Log) -> Optional[dict]:
    try:
        from gameqa.bench.models import bench_models
    except ImportError as exc:
        notes.append(f"speed not measured: gameqa.bench.models is not available ({exc})")
        return None
    models = [m for m in accuracy["models"].values() if m["model"] and not m["full_reference"]]
    if not models:
        notes.append("speed not measured: no no-reference model was scored")
        return None
    repeats = opts.speed_repeats or (2 if opts.quick else 5)
    try:
        clip = dict(clip_seconds=2.0, clip_size=(640, 360), clip_fps=30.0, clip_repeats=1) if opts.quick else \
            dict(clip_repeats=3)  # full run: a 10 s 1080p60 clip (gameqa.bench.models' default)
        bench = bench_models([m["model"] for m in models], threads=(1,), heights=(720,), repeats=repeats,
                             make_clip=True, log=log, **clip)
    except GameQAError as exc:
        notes.append(f"speed not measured: {exc}")
        return None
    rows = []
    for m, row in zip(models, bench["models"]):
        ms = row["ms_per_frame"][SPEED_KEY]
        rows.append({"key": m["key"], "label": m["label"], "model": m["model"], "ms_best": ms["best"],
                     "ms_median": ms["median"], "parameters": row.get("parameters"),
                     "macs_per_frame": row.get("macs_per_frame", {}).get("720"),
                     "clip_s": row.get("clip_s"), "clip_vs_decode": row.get("clip_vs_decode"),
                     "srocc": m["table"]["SROCC"]["value"]})
    return {"repeats": repeats, "cpus": bench.get("cpus"), "onnxruntime": bench.get("onnxruntime"), "models": rows,
            "bench": bench}


def _section_distill(doc: Doc, out: Path, opts: ReportOptions, pred: Predictor, manifest: Path,
                     test_rows: list[dict], accuracy: dict, log: Log) -> dict:
    groups, notes, clips = _groups_section(
        doc, out, opts, pred, manifest, test_rows, DISTILL_GROUPS, "Distillation",
        "Students trained with the teacher's soft targets and features (eraque-student-s*) against the same "
        "students trained on the labels alone (eraque-student-plain-s*), mean ± sample sd over seeds.",
        "distillation", log)
    speed = _speed(opts, accuracy, notes, log) if opts.speed else None
    if not opts.speed:
        notes.append("speed not measured: --no-speed")
    if speed:
        doc.h(3, "Accuracy / speed trade-off")
        doc.p(f"Speed: gameqa.bench.models in this run, one 720p gameplay frame at a time, 1 thread, best and median "
              f"of {speed['repeats']} interleaved repeats ({speed['cpus']} CPUs, ONNX Runtime {speed['onnxruntime']}); "
              f"SROCC from the accuracy section ({SPLIT} split, {accuracy['clips']} clips). Full-reference models "
              "are left out (they need the source).")
        clip = speed["bench"].get("clip") or {}
        if clip:
            doc.p(f"Clip throughput: seconds to score a {clip['width']}x{clip['height']} {clip['fps']:.3g} fps "
                  f"{clip['seconds']:.3g} s {clip['codec']} clip with the default sampling ({speed['bench']['sample']}, "
                  f"{clip['sampled_frames']} frames), decode included, best of {clip['repeats']} interleaved repeats, "
                  f"against decoding and sampling it alone ({clip['decode_s']:.2f} s).")
        doc.table(["model", "parameters (M)", "GMAC / 720p frame", "ms / frame best", "ms / frame median",
                   "clip s", "x decode alone", "SROCC"],
                  [[r["label"], "n/a" if r["parameters"] is None else fmt(r["parameters"] / 1e6, 2),
                    "n/a" if r["macs_per_frame"] is None else fmt(r["macs_per_frame"] / 1e9, 2),
                    fmt(r["ms_best"], 1), fmt(r["ms_median"], 1),
                    "n/a" if r.get("clip_s") is None else fmt(r["clip_s"], 2),
                    "n/a" if r.get("clip_vs_decode") is None else fmt(r["clip_vs_decode"], 2), fmt(r["srocc"])]
                   for r in speed["models"]])
        points = [(r["label"], r["ms_best"], r["srocc"]) for r in speed["models"]
                  if r["ms_best"] and r["srocc"] is not None and math.isfinite(r["srocc"])]
        if points:
            _tradeoff_plot(out / "tradeoff.png", points, "SROCC vs ms per frame")
            doc.img("tradeoff.png", "SROCC vs ms per frame")
    for n in notes:
        doc.note(n)
    return {"split": SPLIT, "clips": clips, "groups": groups, "speed": speed, "notes": notes}


def _section_aesthetic(doc: Doc, opts: ReportOptions) -> dict:
    doc.h(2, "Aesthetic / image-quality model")
    if opts.aesthetic_json is None:
        note = (f"not measured in this run (give --aesthetic-json FILE from `gameqa eval-aesthetic ... --json FILE`); "
                f"protocol and figures: {AESTHETIC_DOC} in the gameqa repository")
        doc.note(note)
        return {"measured": False, "notes": [note]}
    from gameqa.train.aesthetic import summarise

    try:
        data = json.loads(Path(opts.aesthetic_json).read_text())
        reports = data["reports"]
        summaries = {variant: summarise(runs) for variant, runs in reports.items()}
        seeds = len(next(iter(reports.values())))
    except (OSError, ValueError, KeyError, TypeError, StopIteration) as exc:
        note = f"{opts.aesthetic_json}: not an eval-aesthetic results file ({exc}); see {AESTHETIC_DOC}"
        doc.note(note)
        return {"measured": False, "notes": [note]}
    name = data.get("config", {}).get("name", "?")
    doc.p(f"From {opts.aesthetic_json} (written by `gameqa eval-aesthetic --json`): config {name}, {seeds} random "
          f"train/test splits, mean ± sample sd over splits. Protocol: {AESTHETIC_DOC}.")
    keys = list(dict.fromkeys(k for s in summaries.values() for k in s))
    doc.table(["measure"] + [f"rank={v}" for v in summaries],
              [[k] + [fmt_sd(*s[k]) if k in s else "n/a" for s in summaries.values()] for k in keys])
    return {"measured": True, "file": str(opts.aesthetic_json), "config": name, "seeds": seeds,
            "summary": {v: {k: {"mean": m, "sd": sd} for k, (m, sd) in s.items()} for v, s in summaries.items()},
            "notes": []}


def load_published() -> list[dict]:
    """The published reference figures shipped in ``published.toml``."""
    import tomllib
    from importlib import resources

    text = (resources.files("gameqa.bench") / "published.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)["system"]


def _section_published(doc: Doc) -> list[dict]:
    systems = load_published()
    doc.h(2, "Published figures of reference systems (their own data sets and splits)")
    doc.p("Copied from the cited sources, not measured here, and not comparable with the tables above: other "
          "content, other distortions, human ratings instead of VMAF-derived labels, other protocols.")
    doc.table(["system", "data set", "protocol", "SROCC", "PLCC", "reference", "source"],
              [[s["system"], s["dataset"], s["protocol"], fmt(s.get("srocc"), 4), fmt(s.get("plcc"), 4),
                s.get("reference", ""), s["source"]] for s in systems])
    return systems


# --------------------------------------------------------------------------------------------------------------

def _load_rows(opts: ReportOptions) -> tuple[Path, list[dict]]:
    """Read and check the manifest (every clip file present); the corpus folder it resolves against."""
    from gameqa.data.manifest import manifest_root, read_manifest, split_rows

    manifest = Path(opts.manifest)
    root = manifest_root(manifest, opts.root)
    rows = read_manifest(manifest, root=root, check_files=True)
    if len(split_rows(rows).get(SPLIT, [])) < 2:
        raise ConfigError(manifest, f"the {SPLIT} split has fewer than 2 clips")
    return root, rows


def build_report(opts: ReportOptions, output: str | os.PathLike, log: Log = lambda _m: None) -> dict:
    """Measure everything and write the report folder ``output`` in one step; returns the results."""
    started = time.perf_counter()
    root, rows = _load_rows(opts)  # a bad manifest fails here, before anything is written
    if opts.sample:
        from gameqa.media import SamplePolicy

        SamplePolicy.parse(opts.sample)  # a bad policy too
    out = Path(output).resolve()
    check_replaceable(out, marker="results.json", what="report", option="--output",
                      owned=lambda p: p.is_file() and (p.name in REPORT_FILES or p.suffix == ".png"))
    if opts.store is not None:
        make_folder(opts.store, "the prediction store")
    make_folder(out.parent, "the report's parent folder")
    bootstrap = opts.bootstrap if opts.bootstrap is not None else (100 if opts.quick else 1000)
    test_rows = [r for r in rows if r["split"] == SPLIT]
    if opts.quick:
        test_rows = [r for game in sorted({r["game"] for r in test_rows})
                     for r in _spread_pick([t for t in test_rows if t["game"] == game], opts.quick_clips)]
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        with tempfile.TemporaryDirectory(prefix="gameqa-report-") as work:
            pred = Predictor(root, Path(work), Path(opts.frames_cache) if opts.frames_cache else None, log,
                             opts.sample, store=opts.store)
            doc = Doc()
            doc.h(1, "gameqa benchmark report")
            manifest = Path(opts.manifest).resolve()
            doc.p(f"Corpus manifest {manifest}: {len(rows)} clips, {len({r['source_id'] for r in rows})} sources, "
                  f"games {', '.join(sorted({r['game'] for r in rows}))}. "
                  + ("QUICK run: a few clips per game and few bootstrap resamples; a smoke test, not a result. "
                     if opts.quick else "")
                  + "Every number below was measured in this run unless its section says otherwise"
                  + (f"; clip predictions are kept in {opts.store} and reused when the model's weights, version "
                     "and frame policy and the clip file are unchanged (the count reused is in results.json)."
                     if opts.store else "."))
            results = {"version": _version(), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                       "manifest": str(manifest), "corpus_root": str(root), "quick": opts.quick,
                       "runs_dir": str(opts.runs_dir) if opts.runs_dir else None, "cpus": os.cpu_count(),
                       "sample": opts.sample,
                       "argv": sys.argv[1:]}
            log(f"accuracy: {len(test_rows)} {SPLIT} clips")
            results["accuracy"] = _section_accuracy(doc, staging, opts, pred, test_rows, bootstrap, log)
            log("leave one game out")
            results["logo"] = _section_logo(doc, staging, opts, pred, rows, manifest, results["accuracy"], log,
                                            bootstrap)
            results["quantiser"] = _section_quantiser(doc, staging, opts, manifest, log, bootstrap)
            log("ablation")
            results["ablation"] = _section_ablation(doc, staging, opts, pred, manifest, test_rows, log)
            log("distillation")
            results["distillation"] = _section_distill(doc, staging, opts, pred, manifest, test_rows,
                                                       results["accuracy"], log)
            results["aesthetic"] = _section_aesthetic(doc, opts)
            results["published"] = _section_published(doc)
            results["prediction_store"] = {"folder": str(opts.store) if opts.store else None,
                                           "reused": dict(pred.reused),
                                           "scoring_s": {k: round(v, 1) for k, v in pred.seconds.items()}}
        results["wall_s"] = round(time.perf_counter() - started, 1)
        doc.p(f"Made by `gameqa bench all` (gameqa {results['version']}) on {results['created']} in "
              f"{results['wall_s']} s on {results['cpus']} CPUs; every number is in results.json.")
        (staging / "results.json").write_text(json.dumps(_clean(results), indent=1, allow_nan=False) + "\n")
        (staging / "report.md").write_text(doc.markdown())
        (staging / "report.html").write_text(doc.html("gameqa benchmark report"))
        for path in staging.iterdir():
            os.chmod(path, 0o644)
        replace_folder(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return results


REPORT_FILES = ("report.md", "report.html", "results.json")


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("gameqa")
    except Exception:  # noqa: BLE001  (not installed as a distribution)
        return "unknown"


def readme_table(report_dir: str | os.PathLike) -> str:
    """The README's Markdown results table, made from a report's results.json only."""
    if not Path(report_dir).is_dir():
        raise ConfigError(report_dir, "no report folder (`gameqa bench all --output FOLDER` makes one)")
    path = Path(report_dir) / "results.json"
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
        return _readme_table(results)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        # a report of another version or a damaged one: any missing or misshapen part says so in one line
        raise ConfigError(path, f"not a gameqa report ({exc.__class__.__name__}: {exc})") from None


def _readme_table(results: dict) -> str:
    accuracy = results["accuracy"]
    lines = [markdown_table(ACCURACY_HEADER, accuracy_rows(accuracy)), "",
             f"{accuracy['split']} split, {accuracy['clips']} clips from {accuracy['sources']} sources"
             f"{' (QUICK subset)' if results.get('quick') else ''}; 95% bootstrap intervals ({accuracy['bootstrap']} "
             f"resamples); labels are clip(VMAF/20, 1, 5). From `gameqa bench all` of {results['created']}."]
    logo = results.get("logo", {}).get("games", {})
    runs = {g: e["run"] for g, e in logo.items() if e.get("run")}
    if runs:
        lines += ["", "Leave one game out (ERAQUE, SROCC / PLCC): " + ", ".join(
            f"{g} {fmt(r['srocc'])} / {fmt(r['plcc'])} ({r['clips']} clips"
            + (f", mean of {r['seeds']} runs" if r.get("seeds", 1) > 1 else "") + ")" for g, r in runs.items()) + "."]
    for section in ("ablation", "distillation"):
        groups = results.get(section, {}).get("groups", {})
        if groups:
            lines += ["", f"{section.capitalize()} (SROCC, mean ± sd over seeds): " + "; ".join(
                f"{label} {fmt_sd(g['mean']['srocc'], g['std']['srocc'])} ({len(g['runs'])} runs)"
                for label, g in groups.items()) + "."]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------------------
# Commands (mounted in gameqa.cli as `gameqa bench all` and `gameqa bench readme-table`)

def bench_all_command(
    output: str = typer.Option(..., "--output", "-o", help="Report folder (written whole at the end)."),
    manifest: Optional[str] = typer.Option(None, "--manifest", help="Corpus manifest (default: "
                                           "$GAMEQA_CACHE/corpus/manifests/corpus.csv)."),
    root: Optional[str] = typer.Option(None, "--root", help="Corpus folder (default: the manifest's corpus)."),
    runs_dir: Optional[str] = typer.Option(None, "--runs-dir", help="Training runs (default: $GAMEQA_CACHE/runs)."),
    teacher: Optional[str] = typer.Option(None, "--teacher", help="ERAQUE teacher model folder (default: "
                                          "$GAMEQA_CACHE/models/eraque when present)."),
    student: List[str] = typer.Option([], "--student", help="Student model folder (repeat)."),
    model: List[str] = typer.Option([], "--model", "-m", help="Registry models or model folders to score (default: "
                                    "every registered model; repeat)."),
    quick: bool = typer.Option(False, "--quick", help="A few clips per game, 100 resamples: a smoke run."),
    quick_clips: int = typer.Option(4, "--quick-clips", help="With --quick: clips per game and section."),
    sample: Optional[str] = typer.Option(None, "--sample", "-s", help="With --quick: one frame policy for every "
                                         "model, e.g. uniform:2 (default: each model's own)."),
    bootstrap: Optional[int] = typer.Option(None, "--bootstrap", min=0, help="Bootstrap resamples (default 1000; quick 100)."),
    frames_cache: Optional[str] = typer.Option(None, "--frames-cache", help="Frame cache (default: $GAMEQA_CACHE/frames)."),
    aesthetic_json: Optional[str] = typer.Option(None, "--aesthetic-json", help="An `eval-aesthetic --json` file."),
    speed: bool = typer.Option(True, "--speed/--no-speed", help="Time the no-reference models (gameqa.bench.models)."),
    store: Optional[str] = typer.Option(None, "--store", help="Keep clip predictions here and reuse them (default: "
                                        "$GAMEQA_CACHE/bench/predictions; timings are always measured anew)."),
    no_store: bool = typer.Option(False, "--no-store", help="Score every clip anew and keep nothing."),
    logo_runs: str = typer.Option(LOGO_PREFIX + "{game}", "--logo-runs", help="Leave-one-game-out run folders under "
                                  "--runs-dir, {game} standing for the game; a glob takes several seeds, e.g. "
                                  "'eraque-logo8sj-{game}*'."),
    logo_crop_mode: Optional[str] = typer.Option(None, "--logo-crop-mode", help="Crops of the leave-one-game-out "
                                                 "runs: grid, texture or typical (default: each run's own)."),
) -> None:
    """Benchmark report: accuracy, leave-one-game-out, ablation, distillation, speed and published figures."""
    from gameqa.paths import cache_dir

    default_teacher = cache_dir() / "models" / "eraque"
    opts = ReportOptions(
        manifest=Path(manifest) if manifest else cache_dir() / "corpus" / "manifests" / "corpus.csv",
        root=Path(root) if root else None, runs_dir=Path(runs_dir) if runs_dir else cache_dir() / "runs",
        teacher=Path(teacher) if teacher else (default_teacher if (default_teacher / "model.json").is_file() else None),
        students=[Path(s) for s in student], models=list(model) or None, quick=quick, quick_clips=quick_clips,
        bootstrap=bootstrap, frames_cache=Path(frames_cache) if frames_cache else None, sample=sample,
        aesthetic_json=Path(aesthetic_json) if aesthetic_json else None, speed=speed,
        store=None if no_store else Path(store) if store else cache_dir() / "bench" / "predictions",
        logo_runs=logo_runs, logo_crop_mode=logo_crop_mode)
    if quick_clips < 2:
        fail("--quick-clips must be at least 2", 2)
    if "{game}" not in logo_runs:
        fail(f"--logo-runs {logo_runs!r} has no {{game}} in it: one pattern serves every game", 2)
    from gameqa.models.onnx_engine import CROP_MODES
    if logo_crop_mode not in (None, *CROP_MODES):
        fail(f"--logo-crop-mode {logo_crop_mode!r}: use {', '.join(CROP_MODES)}", 2)
    if sample and not quick:
        fail("--sample is for --quick runs; a full report scores each model its own way", 2)
    try:
        results = build_report(opts, output, log=log_line)
    except GameQAError as exc:
        fail(exc)
    log_line(f"report written to {Path(output).resolve()} in {results['wall_s']} s")


README_START = "<!-- gameqa bench readme-table: start -->"
README_END = "<!-- gameqa bench readme-table: end -->"


def write_readme_table(report_dir: str | os.PathLike, readme: str | os.PathLike) -> Path:
    """Replace the text between the README's two marker lines with ``readme_table(report_dir)`` (atomically)."""
    from gameqa.sinks import write_atomic

    readme = Path(readme)
    try:
        text = readme.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(readme, f"cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(readme, "is not UTF-8 text") from None
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise ConfigError(readme, f"needs the marker lines {README_START!r} and then {README_END!r}")
    table = readme_table(report_dir)
    write_atomic(text[:start + len(README_START)] + "\n" + table + text[end:], readme)
    return readme


def readme_table_command(
    report: str = typer.Option(..., "--report", help="A report folder written by `gameqa bench all`."),
    write: Optional[str] = typer.Option(None, "--write", help="Put the table into this README, between its "
                                        "marker lines, instead of printing it."),
) -> None:
    """Print the README's Markdown results table, generated from the report's results.json."""
    try:
        if write:
            write_readme_table(report, write)
            typer.echo(f"results table written into {write}")
            return
        text = readme_table(report)
    except GameQAError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1)
    typer.echo(text, nl=False)
