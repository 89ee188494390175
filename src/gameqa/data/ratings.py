"""Per-image rating summaries from many sources, in one internal form (:class:`RatingSet`).

Each image has an id (its path relative to the set's image folder), the mean score, the standard deviation of
the raters' scores (sample std, ddof=1), the number of raters ``n`` and, where the source has vote counts, the
vote histogram over the integer scores of the scale. Readers:

* :func:`read_ava` -- AVA-style vote histograms: ``AVA.txt`` rows (index, image id, 10 counts for scores 1-10,
  2 semantic tags, challenge id) or rows of just ``image_id c1 .. c10``;
* :func:`read_rater_table` -- a wide per-rater table: CSV with an ``image`` column and one column per rater,
  empty cells for raters who did not rate that image;
* :func:`read_mos_table` -- a CSV of summaries: ``image``, ``mos`` (or ``mean``), ``std`` and optionally ``n``;
* :func:`read_votes_export` -- the votes CSV of our subjective-study app (stimulus, observer, score[, content]),
  summarised with ``gameqa.subjective.analysis.mos``;
* :func:`read_clive` -- the LIVE In the Wild Image Quality Challenge database (MOS and std from its .mat files).

:func:`simulate_panel` draws a finite AVA-like rater panel from known per-image means and spreads.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from gameqa.errors import ConfigError, read_config_text
from gameqa.csvio import read_csv_records

AVA_SCALE = (1.0, 10.0)
CLIVE_SCALE = (0.0, 100.0)
CLIVE_MEAN_RATERS = 175
"""The CLIVE README: "more than 350,000 human ratings ... from over 8,100 unique subjects which amounts to an
average of 175 ratings on each image". Per-image counts are not released, so every image gets this average."""
FORMATS = ("ava", "raters", "mos", "votes", "clive")


@dataclass(frozen=True)
class RatingSet:
    """Per-image mean, std (ddof=1), rater count and optional vote histogram, on the scale ``(low, high)``.

    ``histogram[i, k]`` counts the votes of value ``bins[k]`` for image i (None when the source has none).
    ``root`` is the folder the ids are relative to (None if the images are not at hand).
    """

    name: str
    ids: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    n: np.ndarray
    scale: tuple[float, float]
    histogram: np.ndarray | None = None
    bins: tuple[float, ...] = ()
    root: Path | None = None
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in ("mean", "std"):
            object.__setattr__(self, key, np.asarray(getattr(self, key), dtype=np.float64).ravel())
        object.__setattr__(self, "n", np.asarray(self.n, dtype=np.int64).ravel())
        object.__setattr__(self, "ids", tuple(str(i) for i in self.ids))
        count = len(self.ids)
        where = self.name or None
        if not (self.mean.size == self.std.size == self.n.size == count):
            raise ConfigError(where, f"{count} ids but {self.mean.size} means, {self.std.size} stds, {self.n.size} counts")
        if count and not (np.all(np.isfinite(self.mean)) and np.all(np.isfinite(self.std))):
            raise ConfigError(where, "a mean or std is missing or not finite (images with fewer than 2 votes?)")
        if np.any(self.std < 0) or np.any(self.n < 2):
            raise ConfigError(where, "every image needs a std >= 0 and at least 2 raters")
        if len(set(self.ids)) != count:
            raise ConfigError(where, "image ids are not unique")
        if self.histogram is not None:
            hist = np.asarray(self.histogram, dtype=np.float64)
            object.__setattr__(self, "histogram", hist)
            if hist.shape != (count, len(self.bins)):
                raise ConfigError(where, f"histogram has shape {hist.shape}, expected ({count}, {len(self.bins)})")

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index) -> "RatingSet":
        """The images at ``index`` (an integer array or boolean mask), in that order."""
        index = np.arange(len(self))[np.asarray(index)]
        hist = None if self.histogram is None else self.histogram[index]
        return replace(self, ids=tuple(self.ids[i] for i in index), mean=self.mean[index], std=self.std[index],
                       n=self.n[index], histogram=hist)

    def half_width(self, confidence: float = 0.95) -> np.ndarray:
        """Half-width of each mean's Student-t confidence interval: t(n-1) * std / sqrt(n)."""
        from scipy import stats

        return stats.t.ppf(0.5 + confidence / 2.0, self.n - 1) * self.std / np.sqrt(self.n)

    def image_path(self, i: int) -> Path:
        """Where image i lives."""
        if self.root is None:
            raise ConfigError(self.name or None, "this rating set has no image folder")
        return self.root / self.ids[i]

    def probabilities(self) -> np.ndarray | None:
        """The vote histogram as per-image probabilities (rows sum to 1), or None."""
        if self.histogram is None:
            return None
        return self.histogram / self.histogram.sum(axis=1, keepdims=True)


def summarise_histogram(counts: np.ndarray, bins) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, sample std, n) of each row of vote counts over the score values ``bins``."""
    counts = np.asarray(counts, dtype=np.float64)
    values = np.asarray(bins, dtype=np.float64)
    n = counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = counts @ values / n
        squares = (counts * (values[None, :] - mean[:, None]) ** 2).sum(axis=1)
        std = np.sqrt(squares / (n - 1))
    return mean, std, n.astype(np.int64)


def _image_root(root, path: Path) -> Path | None:
    if root is None or root == "":
        return None
    root = Path(os.path.expandvars(os.fspath(root))).expanduser()
    return root if root.is_absolute() else (path.parent / root)


def read_ava(path: str | os.PathLike, root=None, suffix: str = ".jpg") -> RatingSet:
    """AVA-style vote histograms on 1-10. Ids get ``suffix`` when they have no extension (AVA's do not)."""
    path = Path(path)
    lines = read_config_text(path, "ratings file").splitlines()
    ids, rows = [], []
    for number, line in enumerate(lines, start=1):
        fields = line.replace(",", " ").split()
        if not fields:
            continue
        if len(fields) == 15:       # AVA.txt: index, id, 10 counts, tag, tag, challenge
            image, counts = fields[1], fields[2:12]
        elif len(fields) == 11:     # id + 10 counts
            image, counts = fields[0], fields[1:11]
        else:
            raise ConfigError(path, f"line {number}: expected 15 (AVA.txt) or 11 (id + 10 counts) fields, got {len(fields)}")
        try:
            values = [float(c) for c in counts]
        except ValueError:
            raise ConfigError(path, f"line {number}: a vote count is not a number") from None
        if any(v < 0 or not math.isfinite(v) or v != int(v) for v in values):
            raise ConfigError(path, f"line {number}: vote counts must be whole numbers >= 0")
        if sum(values) < 2:
            raise ConfigError(path, f"line {number}: image {image!r} has fewer than 2 votes")
        ids.append(image if Path(image).suffix else image + suffix)
        rows.append(values)
    if not rows:
        raise ConfigError(path, "no images")
    bins = tuple(float(b) for b in range(1, 11))
    counts = np.array(rows)
    mean, std, n = summarise_histogram(counts, bins)
    return RatingSet(path.name, tuple(ids), mean, std, n, AVA_SCALE, counts, bins, _image_root(root, path))


def _read_csv(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    header, rows = read_csv_records(path, "ratings")
    if not rows:
        raise ConfigError(path, "no images")
    return header, rows


def _number(text: str, path: Path, line: int, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(path, f"line {line}: {what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ConfigError(path, f"line {line}: {what} {text!r} is not finite")
    return value


def _histogram_if_integer(scores_by_image: list[np.ndarray], scale) -> tuple[np.ndarray | None, tuple[float, ...]]:
    """Vote counts over the integer scores of the scale, when every vote is such an integer (else None)."""
    low, high = scale
    if low != int(low) or high != int(high) or high - low > 20:
        return None, ()
    votes = np.concatenate(scores_by_image)
    if not np.all(votes == np.round(votes)):
        return None, ()
    bins = np.arange(int(low), int(high) + 1, dtype=np.float64)
    counts = np.stack([np.bincount((s - low).astype(int), minlength=bins.size) for s in scores_by_image])
    return counts.astype(np.float64), tuple(bins)


def _check_scale(scale, values: np.ndarray, path: Path) -> tuple[float, float]:
    if scale is None:
        raise ConfigError(path, "give the rating scale (low, high)")
    low, high = float(scale[0]), float(scale[1])
    if not low < high:
        raise ConfigError(path, f"bad scale {low:g}..{high:g}")
    if values.size and (values.min() < low or values.max() > high):
        raise ConfigError(path, f"a score lies outside the scale {low:g}..{high:g} (seen {values.min():g}..{values.max():g})")
    return low, high


def read_rater_table(path: str | os.PathLike, scale=None, root=None) -> RatingSet:
    """A wide table: column ``image``, then one column per rater; empty or ``nan`` cells are missing votes."""
    path = Path(path)
    header, rows = _read_csv(path)
    if "image" not in header:
        raise ConfigError(path, "missing column 'image' (need image, then one column per rater)")
    raters = [h for h in header if h != "image"]
    if not raters:
        raise ConfigError(path, "no rater columns")
    ids, per_image = [], []
    for line, row in rows:
        scores = []
        for rater in raters:
            text = row.get(rater, "")
            if text.lower() not in {"", "nan", "na", "none"}:
                scores.append(_number(text, path, line, f"score of rater {rater!r}"))
        if len(scores) < 2:
            raise ConfigError(path, f"line {line}: image {row['image']!r} has fewer than 2 scores")
        ids.append(row["image"])
        per_image.append(np.array(scores))
    low, high = _check_scale(scale, np.concatenate(per_image), path)
    mean = np.array([s.mean() for s in per_image])
    std = np.array([s.std(ddof=1) for s in per_image])
    n = np.array([s.size for s in per_image])
    hist, bins = _histogram_if_integer(per_image, (low, high))
    return RatingSet(path.name, tuple(ids), mean, std, n, (low, high), hist, bins, _image_root(root, path))


def read_mos_table(path: str | os.PathLike, scale=None, raters: int | None = None, root=None) -> RatingSet:
    """Columns ``image``, ``mos`` (or ``mean``), ``std`` and ``n`` (``raters`` fills a missing n column)."""
    path = Path(path)
    header, rows = _read_csv(path)
    mean_key = "mos" if "mos" in header else "mean"
    missing = {"image", mean_key, "std"} - set(header)
    if missing:
        raise ConfigError(path, f"missing column(s) {', '.join(sorted(missing))} (need image, mos, std[, n])")
    if "n" not in header and not raters:
        raise ConfigError(path, "no 'n' column: give the number of raters per image")
    ids, means, stds, counts = [], [], [], []
    for line, row in rows:
        ids.append(row["image"])
        means.append(_number(row[mean_key], path, line, "mean"))
        stds.append(_number(row["std"], path, line, "std"))
        count = _number(row["n"], path, line, "n") if "n" in header and row["n"] else float(raters or 0)
        if count != int(count) or count < 2:
            raise ConfigError(path, f"line {line}: n must be a whole number >= 2")
        counts.append(int(count))
    mean = np.array(means)
    low, high = _check_scale(scale, mean, path)
    return RatingSet(path.name, tuple(ids), mean, np.array(stds), np.array(counts), (low, high),
                     root=_image_root(root, path))


def read_votes_export(path: str | os.PathLike, scale=None, root=None) -> RatingSet:
    """The study app's votes CSV (stimulus, observer, score[, content]) -> per-stimulus MOS, std, n."""
    from gameqa.subjective.analysis import mos
    from gameqa.subjective.votes import read_votes_csv

    path = Path(path)
    table = read_votes_csv(path, scale=tuple(scale) if scale is not None else None)
    summary = mos(table)
    keep = summary.n >= 2
    if not keep.any():
        raise ConfigError(path, "no stimulus has 2 or more votes")
    if not keep.all():
        dropped = [s for s, k in zip(summary.stimulus_ids, keep) if not k]
        raise ConfigError(path, f"stimuli with fewer than 2 votes: {', '.join(dropped[:5])}")
    per_image = [row[~np.isnan(row)] for row in table.scores]
    present = np.concatenate(per_image)
    low, high = _check_scale(scale if scale is not None else (present.min(), present.max()), present, path)
    hist, bins = _histogram_if_integer(per_image, (low, high))
    return RatingSet(path.name, summary.stimulus_ids, summary.mean, summary.std, summary.n, (low, high), hist, bins,
                     _image_root(root, path), {"content": table.content_ids})


def read_clive(folder: str | os.PathLike, raters: int = CLIVE_MEAN_RATERS, include_training: bool = False) -> RatingSet:
    """CLIVE from its release folder (``Data/*.mat``, ``Images/``): 1,162 test images, scale 0-100.

    The 7 images the study used to train its subjects (``t1.bmp`` .. ``t7.bmp``, in ``Images/trainingImages``) are
    left out unless ``include_training``. Every image gets ``raters`` (the README's average, 175) as its n.
    """
    from scipy.io import loadmat

    folder = Path(os.path.expandvars(os.fspath(folder))).expanduser()
    data = folder / "Data"
    try:
        names = loadmat(data / "AllImages_release.mat")["AllImages_release"]
        mos = loadmat(data / "AllMOS_release.mat")["AllMOS_release"]
        std = loadmat(data / "AllStdDev_release.mat")["AllStdDev_release"]
    except (OSError, KeyError, ValueError) as exc:
        raise ConfigError(data, f"not a CLIVE release Data folder ({exc})") from None
    names = [str(np.ravel(item)[0]) for item in np.ravel(names)]
    mos, std = np.ravel(mos).astype(np.float64), np.ravel(std).astype(np.float64)
    if not len(names) == mos.size == std.size:
        raise ConfigError(data, f"{len(names)} names, {mos.size} MOS, {std.size} std values")
    # The README: 1,162 test images, plus 7 (t1.bmp .. t7.bmp, in Images/trainingImages) that trained the subjects.
    training = [i for i, name in enumerate(names) if re.fullmatch(r"t\d+\.bmp", name, flags=re.IGNORECASE)]
    ids = [("trainingImages/" + name) if i in training else name for i, name in enumerate(names)]
    keep = np.array([include_training or i not in training for i in range(len(names))])
    return RatingSet("CLIVE", tuple(i for i, k in zip(ids, keep) if k), mos[keep], std[keep],
                     np.full(int(keep.sum()), int(raters)), CLIVE_SCALE, root=folder / "Images",
                     info={"training_images_dropped": 0 if include_training else len(training)})


def read_ratings(fmt: str, path: str | os.PathLike, *, scale=None, raters: int | None = None, root=None) -> RatingSet:
    """Dispatch to the reader of ``fmt`` (one of ``FORMATS``)."""
    if fmt == "ava":
        return read_ava(path, root)
    if fmt == "raters":
        return read_rater_table(path, scale, root)
    if fmt == "mos":
        return read_mos_table(path, scale, raters, root)
    if fmt == "votes":
        return read_votes_export(path, scale, root)
    if fmt == "clive":
        return read_clive(path, raters or CLIVE_MEAN_RATERS)
    raise ConfigError(None, f"unknown ratings format {fmt!r} (choose from {', '.join(FORMATS)})")


def simulate_panel(true_mean, true_spread, raters, rng: np.random.Generator, scale=AVA_SCALE,
                   rater_bias_sd: float = 0.3, pool_size: int = 2000) -> np.ndarray:
    """Vote histograms (images x integer scores of ``scale``) from a finite panel of raters per image.

    Each image is rated by ``raters[i]`` raters drawn from a pool of ``pool_size`` (at least the largest panel); rater r gives image i the score
    ``round(true_mean[i] + bias_r + e)`` with ``bias_r ~ N(0, rater_bias_sd)`` and
    ``e ~ N(0, sqrt(true_spread[i]**2 - rater_bias_sd**2))``, clipped to the scale -- so each image's votes
    spread by about ``true_spread[i]`` and every summary carries finite-panel noise.
    """
    true_mean = np.asarray(true_mean, dtype=np.float64)
    true_spread = np.asarray(true_spread, dtype=np.float64)
    raters = np.asarray(raters, dtype=np.int64)
    low, high = int(scale[0]), int(scale[1])
    pool_size = max(pool_size, int(raters.max()))
    bias = rng.normal(0.0, rater_bias_sd, pool_size)
    own_sd = np.sqrt(np.maximum(true_spread ** 2 - rater_bias_sd ** 2, 1e-6))
    counts = np.zeros((true_mean.size, high - low + 1))
    for i in range(true_mean.size):
        who = rng.choice(pool_size, size=int(raters[i]), replace=False)
        votes = np.clip(np.round(true_mean[i] + bias[who] + rng.normal(0.0, own_sd[i], who.size)), low, high)
        counts[i] = np.bincount((votes - low).astype(int), minlength=high - low + 1)
    return counts


def smaller_panel(ratings: RatingSet, raters: int, rng: np.random.Generator) -> RatingSet:
    """The same images as if each had been rated by only ``raters`` people: every image's scores drawn again from
    a normal of its mean and std, clipped to the scale, and summarised (mean, std ddof=1, n = ``raters``).

    The labels of a lab study (15 to a few dozen viewers, ITU-R BT.500 / ITU-T P.910, where CLIVE had about 175 per
    image): the means carry the noise of a few raters and their intervals are wide. Vote histograms are dropped.
    """
    if raters < 2:
        raise ConfigError(ratings.name or None, f"a panel needs at least 2 raters, not {raters}")
    low, high = ratings.scale
    scores = np.clip(ratings.mean[:, None] + ratings.std[:, None] * rng.standard_normal((len(ratings), raters)),
                     low, high)
    return replace(ratings, mean=scores.mean(axis=1), std=scores.std(axis=1, ddof=1),
                   n=np.full(len(ratings), raters), histogram=None, bins=())
