"""Raw subjective votes in one form (`VoteTable`) and the readers that build it.

Sources: our long-format CSV export (stimulus, observer, score[, content]) and the
dataset files of Netflix's sureal/vmaf. Those are Python source files made of literal
assignments; they are parsed with `ast` and evaluated by a small literal-only
evaluator here, never imported or executed.
"""
from __future__ import annotations

import ast
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gameqa.errors import ConfigError, read_config_text
from gameqa.csvio import read_csv_records

__all__ = ["VoteTable", "read_sureal_dataset", "read_votes_csv"]


@dataclass(frozen=True)
class VoteTable:
    """Votes as a stimuli x observers matrix; NaN marks a missing vote.

    ``content_ids[j]`` names the source content of stimulus j (the model's content
    ambiguity is shared by stimuli of one content); ``stimulus_info[j]`` keeps any other
    metadata the source had; ``scale`` is the rating scale's (lowest, highest) when known.
    """

    stimulus_ids: tuple[str, ...]
    observer_ids: tuple[str, ...]
    scores: np.ndarray
    content_ids: tuple[str, ...]
    scale: tuple[float, float] | None = None
    name: str = ""
    stimulus_info: tuple[dict, ...] = field(default=())

    def __post_init__(self) -> None:
        scores = np.asarray(self.scores, dtype=np.float64)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "stimulus_ids", tuple(str(s) for s in self.stimulus_ids))
        object.__setattr__(self, "observer_ids", tuple(str(o) for o in self.observer_ids))
        object.__setattr__(self, "content_ids", tuple(str(c) for c in self.content_ids))
        if not self.stimulus_info:
            object.__setattr__(self, "stimulus_info", tuple({} for _ in self.stimulus_ids))
        source = self.name or None
        num_stimuli, num_observers = len(self.stimulus_ids), len(self.observer_ids)
        if scores.shape != (num_stimuli, num_observers):
            raise ConfigError(source, f"score matrix has shape {scores.shape}, expected "
                                      f"({num_stimuli} stimuli, {num_observers} observers)")
        if len(self.content_ids) != num_stimuli or len(self.stimulus_info) != num_stimuli:
            raise ConfigError(source, "content_ids and stimulus_info need one entry per stimulus")
        if len(set(self.stimulus_ids)) != num_stimuli:
            raise ConfigError(source, "stimulus ids are not unique")
        if len(set(self.observer_ids)) != num_observers:
            raise ConfigError(source, "observer ids are not unique")
        if np.isinf(scores).any():
            raise ConfigError(source, "scores contain an infinite value")
        if self.scale is not None:
            low, high = self.scale
            present = scores[~np.isnan(scores)]
            if present.size and (present.min() < low or present.max() > high):
                raise ConfigError(source, f"a score lies outside the scale {low:g}..{high:g} "
                                          f"(seen {present.min():g}..{present.max():g})")

    @property
    def num_stimuli(self) -> int:
        return len(self.stimulus_ids)

    @property
    def num_observers(self) -> int:
        return len(self.observer_ids)

    @property
    def num_votes(self) -> int:
        return int(np.count_nonzero(~np.isnan(self.scores)))

    def without_observers(self, observer_ids) -> "VoteTable":
        """A copy that leaves out the named observers."""
        drop = {str(o) for o in observer_ids}
        keep = [i for i, o in enumerate(self.observer_ids) if o not in drop]
        return VoteTable(self.stimulus_ids, tuple(self.observer_ids[i] for i in keep),
                         self.scores[:, keep], self.content_ids, self.scale, self.name,
                         self.stimulus_info)


# --- sureal / vmaf dataset files ------------------------------------------------------

_NAN_NAMES = {"nan", "NaN", "NAN"}
_NAN_ATTRIBUTES = {("np", "nan"), ("np", "NaN"), ("numpy", "nan"), ("numpy", "NaN"),
                   ("math", "nan")}


class _LiteralEvaluator:
    """Evaluates literal expressions plus the few forms sureal files use.

    Accepted beyond `ast.literal_eval`: names bound by an earlier assignment in the same
    file, ``+`` between two strings or two numbers, and the spellings of a missing
    vote (``nan``, ``np.nan``, ``math.nan``, ``float('nan')``). Nothing is called or
    imported; anything else is refused.
    """

    def __init__(self, path: Path):
        self.path = path
        self.names: dict[str, object] = {}

    def refuse(self, node: ast.AST, what: str) -> ConfigError:
        return ConfigError(self.path, f"line {getattr(node, 'lineno', '?')}: {what} is not a "
                                      "literal (only literal assignments are read)")

    def value(self, node: ast.AST):
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [self.value(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.Dict):
            if any(k is None for k in node.keys):
                raise self.refuse(node, "a ** expansion")
            return {self.value(k): self.value(v) for k, v in zip(node.keys, node.values)}
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            operand = self.value(node.operand)
            if isinstance(operand, (int, float)) and not isinstance(operand, bool):
                return -operand if isinstance(node.op, ast.USub) else operand
            raise self.refuse(node, "a sign on a non-number")
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left, right = self.value(node.left), self.value(node.right)
            both_str = isinstance(left, str) and isinstance(right, str)
            both_num = all(isinstance(v, (int, float)) and not isinstance(v, bool)
                           for v in (left, right))
            if both_str or both_num:
                return left + right
            raise self.refuse(node, "'+' between other than two strings or two numbers")
        if isinstance(node, ast.Name):
            if node.id in _NAN_NAMES:
                return math.nan
            if node.id in self.names:
                return self.names[node.id]
            raise self.refuse(node, f"the unbound name {node.id!r}")
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if (node.value.id, node.attr) in _NAN_ATTRIBUTES:
                return math.nan
            raise self.refuse(node, f"the attribute {node.value.id}.{node.attr}")
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id == "float" and len(node.args) == 1 and not node.keywords
                and isinstance(node.args[0], ast.Constant)
                and str(node.args[0].value).strip().lower() == "nan"):
            return math.nan
        raise self.refuse(node, f"a {type(node).__name__} expression")

    def module(self, tree: ast.Module) -> dict[str, object]:
        for statement in tree.body:
            if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
                continue  # a docstring
            if isinstance(statement, (ast.Import, ast.ImportFrom)):
                continue  # e.g. `import numpy as np` ahead of `np.nan`; never carried out
            if isinstance(statement, ast.Assign) and all(isinstance(t, ast.Name)
                                                         for t in statement.targets):
                value = self.value(statement.value)
                for target in statement.targets:
                    self.names[target.id] = value
                continue
            raise self.refuse(statement, f"a {type(statement).__name__} statement")
        return self.names


def _vote_value(raw, path: Path, where: str) -> float:
    """One vote as a float; None, NaN and empty strings are a missing vote."""
    if raw is None or (isinstance(raw, str) and raw.strip().lower() in {"", "nan", "none"}):
        return math.nan
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        if isinstance(raw, (list, tuple)):
            raise ConfigError(path, f"{where}: repeated votes by one observer are not supported")
        raise ConfigError(path, f"{where}: vote {raw!r} is not a number")
    return float(raw)


def read_sureal_dataset(path: str | os.PathLike, scale: tuple[float, float] | None = None
                        ) -> VoteTable:
    """Read a sureal/vmaf raw dataset file (``ref_videos``, ``dis_videos`` with ``os``).

    Stimuli are the ``dis_videos`` in file order, named by ``asset_id``; ``os`` may be a
    list (observer ids "0", "1", ... by position) or a dict observer -> vote (observers
    sorted as sureal sorts them). The file is parsed, never executed.
    """
    path = Path(path)
    source = read_config_text(path, "dataset file")
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as err:
        raise ConfigError(path, f"line {err.lineno}: not valid Python syntax ({err.msg})") from None
    names = _LiteralEvaluator(path).module(tree)
    dis_videos = names.get("dis_videos")
    if not isinstance(dis_videos, list) or not dis_videos:
        raise ConfigError(path, "no non-empty 'dis_videos' list")
    ref_videos = names.get("ref_videos", [])
    content_names = {}
    if isinstance(ref_videos, list):
        for ref in ref_videos:
            if isinstance(ref, dict) and "content_id" in ref:
                content_names[ref["content_id"]] = ref.get("content_name")

    for index, video in enumerate(dis_videos):
        if not isinstance(video, dict) or "os" not in video:
            raise ConfigError(path, f"dis_videos[{index}] has no 'os' (opinion scores)")
        if not isinstance(video["os"], (list, tuple, dict)):
            raise ConfigError(path, f"dis_videos[{index}]['os'] is not a list or a dict")
    keyed = isinstance(dis_videos[0]["os"], dict)
    if any(isinstance(v["os"], dict) != keyed for v in dis_videos):
        raise ConfigError(path, "'os' mixes lists and dicts across dis_videos")
    if keyed:
        observers = sorted({key for v in dis_videos for key in v["os"]}, key=_sort_key)
    else:
        counts = {len(v["os"]) for v in dis_videos}
        if len(counts) != 1:
            raise ConfigError(path, f"'os' lists differ in length ({sorted(counts)}); "
                                    "use a dict observer -> vote for partial votes")
        observers = list(range(counts.pop()))

    scores = np.full((len(dis_videos), len(observers)), np.nan)
    stimulus_ids, content_ids, infos = [], [], []
    for j, video in enumerate(dis_videos):
        votes = video["os"]
        for i, observer in enumerate(observers):
            if keyed and observer not in votes:
                continue
            scores[j, i] = _vote_value(votes[observer], path, f"dis_videos[{j}] observer {observer}")
        stimulus_ids.append(str(video.get("asset_id", j)))
        content = video.get("content_id", video.get("asset_id", j))
        content_ids.append(str(content))
        info = {k: v for k, v in video.items() if k != "os"}
        if content in content_names and content_names[content] is not None:
            info.setdefault("content_name", content_names[content])
        infos.append(info)
    name = names.get("dataset_name")
    return VoteTable(tuple(stimulus_ids), tuple(str(o) for o in observers), scores,
                     tuple(content_ids), scale, str(name) if name else path.name, tuple(infos))


def _sort_key(value):
    return (0, value, "") if isinstance(value, (int, float)) else (1, 0, str(value))


# --- our long-format CSV --------------------------------------------------------------

def read_votes_csv(path: str | os.PathLike, scale: tuple[float, float] | None = None
                   ) -> VoteTable:
    """Read long-format votes: one row per vote with columns stimulus, observer, score
    and optionally content. Empty or ``nan`` scores are missing votes. Without a content
    column each stimulus is its own content. Stimuli and observers keep first-seen order.
    """
    path = Path(path)
    header, rows = read_csv_records(path, "votes")
    missing = {"stimulus", "observer", "score"} - set(header)
    if missing:
        raise ConfigError(path, f"missing column(s) {', '.join(sorted(missing))} "
                                "(need stimulus, observer, score[, content])")
    if not rows:
        raise ConfigError(path, "no votes")

    stimuli: dict[str, int] = {}
    observers: dict[str, int] = {}
    contents: dict[str, str] = {}
    votes: dict[tuple[int, int], float] = {}
    has_content = "content" in header
    for line, row in rows:
        stimulus, observer = row["stimulus"], row["observer"]
        if not stimulus or not observer:
            raise ConfigError(path, f"line {line}: empty stimulus or observer")
        text = row["score"]
        if text.lower() in {"", "nan", "na", "none"}:
            score = math.nan
        else:
            try:
                score = float(text)
            except ValueError:
                raise ConfigError(path, f"line {line}: score {text!r} is not a number") from None
            if not math.isfinite(score):
                raise ConfigError(path, f"line {line}: score {text!r} is not finite")
        content = row.get("content", "") if has_content else ""
        content = content or stimulus
        if contents.setdefault(stimulus, content) != content:
            raise ConfigError(path, f"line {line}: stimulus {stimulus!r} has two contents "
                                    f"({contents[stimulus]!r} and {content!r})")
        key = (stimuli.setdefault(stimulus, len(stimuli)),
               observers.setdefault(observer, len(observers)))
        if key in votes:
            raise ConfigError(path, f"line {line}: observer {observer!r} voted twice on "
                                    f"{stimulus!r} (repeated votes are not supported)")
        votes[key] = score
    scores = np.full((len(stimuli), len(observers)), np.nan)
    for (j, i), score in votes.items():
        scores[j, i] = score
    if np.isnan(scores).all():
        raise ConfigError(path, "no votes (every score is empty)")
    return VoteTable(tuple(stimuli), tuple(observers), scores,
                     tuple(contents[s] for s in stimuli), scale, path.name)
