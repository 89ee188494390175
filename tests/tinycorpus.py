"""The tiny corpus that the ERAQUE tests and scripts/gpu_check.py train on: its splits, encodes, manifest rows
and the tiny training config. Importable without ffmpeg (the device machine has none: it encodes with PyAV)."""
from __future__ import annotations

from pathlib import Path

from gameqa.data.manifest import COLUMNS

SPLITS = ["train", "train", "train", "train", "val", "test"]
# (name, width, height, crf, base MOS)
ENCODES = [("hq", 128, 96, 18, 4.5), ("lq", 128, 96, 40, 2.6), ("small", 64, 48, 30, 2.0)]


def manifest_row(root: Path, k: int, game: str, encode: tuple, clip: Path, src: Path) -> dict:
    """The manifest row of encode ``encode`` (an ENCODES entry) of source ``k``: MOS set by hand, so that close
    pairs exist; the objective columns are placeholders."""
    name, w, h, _crf, mos = encode
    row = {c: "" for c in COLUMNS}
    row.update({
        "clip_id": f"src{k}-{name}", "source_id": f"src{k}", "game": game, "group": "game", "codec": "h264",
        "encoder": "libx264", "height": h, "width": w, "display_height": 96, "display_width": 128,
        "kbps": 100.0, "actual_kbps": 100.0, "fps": 10.0, "seconds": 1.0, "path": str(clip.relative_to(root)),
        "source_path": str(src.relative_to(root)), "vmaf": 50.0, "vmaf_p5": 40.0, "psnr_y": 30.0,
        "ssim": 0.9, "mos": round(mos + 0.1 * k, 2), "frames": 10, "split": SPLITS[k],
    })
    return row


def tiny_tree(corpus: Path, work: Path, device: str = "cpu", **sections) -> dict:
    """A config tree that trains the ``tiny`` backbone on 64 px crops of the tiny corpus in seconds."""
    tree = {
        "name": "eraque-test", "seed": 3, "out_dir": str(work / "run"),
        "data": {"root": str(corpus), "manifest": "manifests/corpus.csv", "frames_cache": str(work.parent / "frames"),
                 "sample": "uniform:3", "val_frames": 2, "val_crops": 2},
        "model": {"backbone": "tiny", "pretrained": False, "head_hidden": 16, "dropout": 0.1},
        "input": {"crop_size": 64, "crops_per_frame": 2},
        "loss": {"rank_threshold": 0.5},
        "train": {"epochs": 2, "batch_size": 4, "frames_per_clip_per_epoch": 1, "lr": 1e-3, "warmup_steps": 1,
                  "checkpoint_every": 1, "log_every": 1, "threads": 1, "progress": False, "device": device},
    }
    for section, values in sections.items():
        tree.setdefault(section, {}).update(values)
    return tree
