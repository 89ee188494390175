"""Corpus summary and label sanity checks, as numbers and as a plot."""
from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import numpy as np


def corpus_stats(rows: list[dict]) -> dict:
    """Counts per game, codec, height and split; label ranges; how often VMAF rises with bitrate in a ladder.

    A ladder is the clips of one source, codec and encode height; it is monotonic when VMAF never falls as
    the target bitrate rises.
    """
    ladders: dict[tuple, list[tuple[float, float]]] = defaultdict(list)
    for r in rows:
        ladders[(r["source_id"], r["codec"], r["height"])].append((float(r["kbps"]), float(r["vmaf"])))
    checked = monotonic = 0
    for points in ladders.values():
        if len(points) < 2:
            continue
        checked += 1
        vmafs = [v for _, v in sorted(points)]
        monotonic += all(b >= a for a, b in zip(vmafs, vmafs[1:]))
    mos = np.array([float(r["mos"]) for r in rows])
    vmaf = np.array([float(r["vmaf"]) for r in rows])
    return {
        "clips": len(rows),
        "sources": len({r["source_id"] for r in rows}),
        "games": dict(sorted(Counter(r["game"] for r in rows).items())),
        "sources_per_game": dict(sorted(Counter(g for g, _ in {(r["game"], r["source_id"]) for r in rows}).items())),
        "codecs": dict(sorted(Counter(r["codec"] for r in rows).items())),
        "heights": dict(sorted(Counter(int(r["height"]) for r in rows).items())),
        "splits": dict(sorted(Counter(r["split"] for r in rows).items())),
        "mos_min": float(mos.min()), "mos_max": float(mos.max()), "mos_mean": float(mos.mean()),
        "vmaf_min": float(vmaf.min()), "vmaf_max": float(vmaf.max()),
        "mos_histogram": np.histogram(mos, bins=8, range=(1, 5))[0].tolist(),
        "ladders_checked": checked,
        "ladders_monotonic": monotonic,
        "monotonic_share": monotonic / checked if checked else float("nan"),
    }


def block_edge_ratio(luma: np.ndarray, block: int = 8) -> float:
    """How much larger pixel steps are across the edges of a ``block`` x ``block`` grid than inside its blocks.

    The mean absolute step between neighbours (horizontal and vertical, each direction's ratio averaged) whose
    boundary lies on the grid, over the mean step elsewhere: about 1 for drawn or filmed content, above 1 where
    JPEG or another block transform left its grid (Pingus' captures: 1.05-1.32; our sources after a JPEG round trip
    at ffmpeg's ``-q:v 8``: 1.15-2.06 per game, highest where flat areas have few steps inside blocks).
    """
    y = np.asarray(luma, dtype=np.float64)
    if y.ndim != 2 or min(y.shape) <= block:
        raise ValueError(f"block_edge_ratio wants a 2-D luma plane larger than {block} px, got shape {y.shape}")
    ratios = []
    for steps in (np.abs(np.diff(y, axis=1)), np.abs(np.diff(y, axis=0)).T):
        on_edge = np.arange(steps.shape[1]) % block == block - 1
        inside = steps[:, ~on_edge].mean()
        ratios.append(steps[:, on_edge].mean() / inside if inside > 0 else 1.0)
    return float(np.mean(ratios))


def sources_as_rows(sources_dir: str | Path) -> list[dict]:
    """Rows for ``source_block_edges`` made from a corpus ``sources/`` folder's files (no manifest needed)."""
    from gameqa.data.corpus import source_files, source_game_content
    from gameqa.errors import ConfigError

    sources_dir = Path(sources_dir)
    files = source_files(sources_dir)  # the build's own rule for what a source is (no probing, no digests)
    if not files:
        raise ConfigError(sources_dir, "no source files here")
    rows = []
    for path in files:
        game, content = source_game_content(sources_dir, path)
        rows.append({"game": game, "content": content, "source_path": str(path.relative_to(sources_dir)),
                     "abs_source_path": str(path)})
    return rows


def source_block_edges(rows: list[dict], frames: int = 5, every: int = 30,
                       warn=print) -> list[dict]:
    """The block-edge ratio of each content's first source in ``rows`` (manifest rows with ``abs_source_path``).

    ``frames`` frames, ``every``-th decoded frame from the first, full-range BT.601 luma (whole numbers) of the
    upright picture; a source that cannot be read is reported through ``warn`` (one line naming it) and left out."""
    from gameqa.errors import GameQAError
    from gameqa.media.video import iter_frames
    from gameqa.models.classical.luma import luma

    firsts: dict[str, dict] = {}
    for r in sorted(rows, key=lambda r: r["source_path"]):
        firsts.setdefault(r["content"] or f"{r['game']}--{r['source_id']}", r)  # no content: its own source
    out = []
    for content, r in sorted(firsts.items(), key=lambda kv: (kv[1]["game"], kv[0])):
        try:
            ratios = []
            for f in iter_frames(r["abs_source_path"], f"every:{every}"):
                ratios.append(block_edge_ratio(luma(f.rgb, limited=False)))
                if len(ratios) == frames:
                    break
        except GameQAError as exc:
            warn(str(exc))
            continue
        out.append({"game": r["game"], "content": content, "source": r["source_path"],
                    "block_edge_ratio": float(np.mean(ratios))})
    return out


def plot_stats(rows: list[dict], out: str | Path) -> Path:
    """Four panels: clips per game, per codec and height, the MOS histogram, VMAF against actual bitrate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gameqa.sinks import save_figure

    s = corpus_stats(rows)
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    ax = axes[0, 0]
    ax.bar(list(s["games"]), list(s["games"].values()), color="#4472c4")
    ax.set_title(f"clips per game ({s['clips']} clips, {s['sources']} sources)")
    ax.tick_params(axis="x", rotation=30)
    ax = axes[0, 1]
    codecs = list(s["codecs"])
    heights = list(s["heights"])
    counts = Counter((r["codec"], int(r["height"])) for r in rows)
    width = 0.8 / max(1, len(heights))
    for j, h in enumerate(heights):
        ax.bar(np.arange(len(codecs)) + j * width, [counts[(c, h)] for c in codecs], width, label=f"{h}p")
    ax.set_xticks(np.arange(len(codecs)) + width * (len(heights) - 1) / 2, codecs)
    ax.set_title("clips per codec and encode height")
    ax.legend()
    ax = axes[1, 0]
    ax.hist([float(r["mos"]) for r in rows], bins=16, range=(1, 5), color="#70ad47", edgecolor="white")
    ax.set_title(f"MOS-scale label (clip(VMAF/20, 1, 5)), range {s['mos_min']:.2f}-{s['mos_max']:.2f}")
    ax.set_xlabel("MOS")
    ax = axes[1, 1]
    for c in codecs:
        pts = [(float(r["actual_kbps"]), float(r["vmaf"])) for r in rows if r["codec"] == c]
        ax.scatter(*zip(*pts), s=6, alpha=0.5, label=c)
    ax.set_xscale("log")
    ax.set_xlabel("actual bitrate (kbps)")
    ax.set_ylabel("VMAF")
    ax.set_title(f"VMAF vs bitrate; ladders monotonic: {s['ladders_monotonic']}/{s['ladders_checked']}")
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, out, dpi=100)
