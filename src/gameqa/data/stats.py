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


def plot_stats(rows: list[dict], out: str | Path) -> Path:
    """Four panels: clips per game, per codec and height, the MOS histogram, VMAF against actual bitrate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
