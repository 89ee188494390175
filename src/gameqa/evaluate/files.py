"""Read predictions and subjective labels from CSV / JSON / JSONL, join them by item, and evaluate.

A gameqa score-results JSONL has one record per item with ``"path"`` and ``"overall"``; a labels CSV
has a key column such as ``"path"``/``"clip"`` and a score column such as ``"mos"``/``"label"``. Items are
joined on the full key first; items left over are then joined on file name, then on file name without
extension, wherever that name is unique on both sides. Every problem is a one-line GameQAError that
names the file.
"""
from __future__ import annotations

import csv
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gameqa.errors import GameQAError
from gameqa.evaluate.table import correlation_table

KEY_COLUMNS = ("path", "clip", "file", "filename", "name", "video", "image", "id", "key")
PRED_COLUMNS = ("overall", "score", "pred", "prediction", "predicted", "mos_pred", "quality")
LABEL_COLUMNS = ("mos", "label", "mos_score", "score", "rating", "gt")


def read_records(path: str | os.PathLike) -> list[dict]:
    """Records (dicts) from a .csv/.tsv, .json (list, {"results": [...]}, or {key: score}) or .jsonl file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise GameQAError(path, "file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise GameQAError(path, f"cannot read: {err}") from None
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv", ".txt"):
        records = _parse_csv(path, text)
    elif suffix == ".jsonl":
        records = _parse_jsonl(path, text)
    elif suffix == ".json":
        records = _parse_json(path, text)
    else:
        raise GameQAError(path, f"unknown score file type {suffix or '(none)'!r}; use .csv, .json or .jsonl")
    if not records:
        raise GameQAError(path, "no records")
    return records


def _parse_csv(path: Path, text: str) -> list[dict]:
    lines = text.splitlines()
    if not lines:
        return []
    header = lines[0]
    delimiter = max(",;\t", key=header.count) if any(c in header for c in ",;\t") else ","
    rows = list(csv.DictReader(lines, delimiter=delimiter))
    return [{(k or "").strip(): v for k, v in row.items()} for row in rows if any((v or "").strip() for v in row.values() if isinstance(v, str))]


def _parse_jsonl(path: Path, text: str) -> list[dict]:
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise GameQAError(path, f"line {number} is not JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise GameQAError(path, f"line {number} is not a JSON object")
        records.append(record)
    return records


def _parse_json(path: Path, text: str) -> list[dict]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise GameQAError(path, f"not JSON (line {err.lineno}: {err.msg})") from None
    if isinstance(data, dict):
        lists = [v for k, v in data.items() if k in ("results", "items", "records", "scores") and isinstance(v, list)]
        if lists:
            data = lists[0]
        elif data and all(isinstance(v, (int, float)) or v is None for v in data.values()):
            return [{"key": k, "score": v} for k, v in data.items()]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise GameQAError(path, "expected a list of objects, {\"results\": [...]}, or {key: score}")
    return data


def _pick_column(path: Path, records: list[dict], wanted: str | None, candidates: tuple[str, ...], role: str) -> str:
    columns = list(dict.fromkeys(k for r in records for k in r))
    if wanted is not None:
        if wanted not in columns:
            raise GameQAError(path, f"no {role} column {wanted!r} (columns: {', '.join(columns)})")
        return wanted
    lower = {c.lower(): c for c in columns}
    for name in candidates:
        if name in lower:
            return lower[name]
    raise GameQAError(path, f"no {role} column found (looked for {', '.join(candidates)}; "
                            f"columns: {', '.join(columns)}); name it explicitly")


def _to_float(value) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    return math.nan if text == "" else float(text)


def _column_scores(path: Path, records: list[dict], key_col: str, value_col: str) -> dict[str, float]:
    scores: dict[str, float] = {}
    for number, record in enumerate(records, start=1):
        key = record.get(key_col)
        if key is None or str(key).strip() == "":
            raise GameQAError(path, f"record {number} has no {key_col!r}")
        key = str(key).strip()
        if key in scores:
            raise GameQAError(path, f"{key_col} {key!r} appears more than once")
        try:
            scores[key] = _to_float(record.get(value_col))
        except (TypeError, ValueError):
            raise GameQAError(path, f"{value_col} of {key!r} is not a number: {record.get(value_col)!r}") from None
    return scores


def _file_name(key: str) -> str:
    return re.split(r"[\\/]", key.rstrip("/\\"))[-1]


def _stem(key: str) -> str:
    name = _file_name(key)
    return name.rsplit(".", 1)[0] if "." in name[1:] else name


def join_scores(pred: dict[str, float], labels: dict[str, float]) -> list[tuple[str, str]]:
    """Pairs (prediction key, label key): exact key, then unique file name, then unique file stem."""
    pairs = [(k, k) for k in pred if k in labels]
    left_pred = [k for k in pred if k not in labels]
    used_labels = {k for _, k in pairs}
    left_labels = [k for k in labels if k not in used_labels]
    for key_of in (_file_name, _stem):
        if not left_pred or not left_labels:
            break
        pred_by, label_by = {}, {}
        for k in left_pred:
            pred_by.setdefault(key_of(k), []).append(k)
        for k in left_labels:
            label_by.setdefault(key_of(k), []).append(k)
        matched = [(pred_by[n][0], label_by[n][0]) for n in pred_by
                   if n in label_by and len(pred_by[n]) == 1 and len(label_by[n]) == 1]
        pairs.extend(matched)
        done_pred = {p for p, _ in matched}
        done_labels = {lab for _, lab in matched}
        left_pred = [k for k in left_pred if k not in done_pred]
        left_labels = [k for k in left_labels if k not in done_labels]
    return pairs


@dataclass
class FileEvaluation:
    """Joined scores and their correlation table."""

    keys: list[str]
    predictions: np.ndarray
    labels: np.ndarray
    table: list[dict]
    pred_only: list[str] = field(default_factory=list)  # prediction keys with no label
    labels_only: list[str] = field(default_factory=list)  # label keys with no prediction


def evaluate_files(pred_path: str | os.PathLike, labels_path: str | os.PathLike, *, key: str | None = None,
                   pred_col: str | None = None, label_col: str | None = None, label_key: str | None = None,
                   logistic: bool = True, bootstrap: int = 1000, seed: int = 0) -> FileEvaluation:
    """Join predictions to labels and compute :func:`correlation_table` on the joined items.

    ``key`` names the join column (in both files unless ``label_key`` names the labels' one); by default
    the first of path/clip/file/name/... present is used. ``pred_col`` defaults to overall/score/pred...,
    ``label_col`` to mos/label/.... Joined items with a missing or NaN score raise GameQAError.
    """
    pred_path, labels_path = Path(pred_path), Path(labels_path)
    pred_records = read_records(pred_path)
    label_records = read_records(labels_path)
    pred_key = _pick_column(pred_path, pred_records, key, KEY_COLUMNS, "key")
    lab_key = _pick_column(labels_path, label_records, label_key or key, KEY_COLUMNS, "key")
    pred_value = _pick_column(pred_path, pred_records, pred_col, PRED_COLUMNS, "prediction")
    lab_value = _pick_column(labels_path, label_records, label_col, LABEL_COLUMNS, "label")
    pred_scores = _column_scores(pred_path, pred_records, pred_key, pred_value)
    label_scores = _column_scores(labels_path, label_records, lab_key, lab_value)
    pairs = join_scores(pred_scores, label_scores)
    if not pairs:
        raise GameQAError(pred_path, f"no item matches any item of {labels_path} "
                                     f"(e.g. {next(iter(pred_scores))!r} vs {next(iter(label_scores))!r})")
    for p_key, l_key in pairs:
        if math.isnan(pred_scores[p_key]):
            raise GameQAError(pred_path, f"{pred_value} of {p_key!r} is missing or NaN")
        if math.isnan(label_scores[l_key]):
            raise GameQAError(labels_path, f"{lab_value} of {l_key!r} is missing or NaN")
    if len(pairs) < 2:
        raise GameQAError(pred_path, f"only {len(pairs)} item matches {labels_path}; need at least 2")
    predictions = np.array([pred_scores[p] for p, _ in pairs])
    labels = np.array([label_scores[lab] for _, lab in pairs])
    if not np.all(np.isfinite(predictions)):
        raise GameQAError(pred_path, f"{pred_value} holds inf")
    if not np.all(np.isfinite(labels)):
        raise GameQAError(labels_path, f"{lab_value} holds inf")
    table = correlation_table(predictions, labels, logistic=logistic, bootstrap=bootstrap, seed=seed)
    matched_pred = {p for p, _ in pairs}
    matched_labels = {lab for _, lab in pairs}
    return FileEvaluation(
        keys=[p for p, _ in pairs],
        predictions=predictions,
        labels=labels,
        table=table,
        pred_only=[k for k in pred_scores if k not in matched_pred],
        labels_only=[k for k in label_scores if k not in matched_labels],
    )
