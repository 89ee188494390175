"""Where a crop-based model looks in a frame, and what it scores there: `gameqa crops`.

A crop model scores a frame as the mean of a few full-resolution windows (``model.json`` input.crops: size,
count, mode grid, texture or typical). Which windows it picks decides much of what it sees (flat sky or the detailed
part of the screen), so this draws them on the frame, each with its own score.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from gameqa.errors import GameQAError, MediaError
from gameqa.sinks import write_via_temp


@dataclass
class CropScore:
    """One window of the frame at display size: top-left corner, side in pixels, the model's score."""

    y: int
    x: int
    size: int
    score: float


def crop_engine(name: str, crops: Optional[int] = None, crop_mode: Optional[str] = None,
                crop_size: Optional[int] = None, threads: int = 1):
    """The engine of a registered crop model or model folder, reading ``crops`` windows of ``crop_size`` px put by
    ``crop_mode`` where given instead of its own (its model.json is left as it is); a ConfigError (bad user input)
    for a model that reads whole frames or an unknown mode. With none of the three: ``create_model`` as it is."""
    from dataclasses import replace

    from gameqa.errors import ConfigError
    from gameqa.models.onnx_engine import check_crop_mode
    from gameqa.models.registry import create_model, get_card

    if (crops, crop_mode, crop_size) == (None, None, None):
        return create_model(name, threads=threads)
    if crop_mode is not None:
        check_crop_mode(crop_mode)
    card = get_card(name)
    own = card.preprocess.get("crops") if card.engine == "onnx" else None
    if not own or card.preprocess.get("resize"):
        raise ConfigError(None, f"--crops, --crop-mode and --crop-size need a model that reads crops; "
                                f"{card.name!r} reads whole frames")
    changed = {"count": crops, "mode": crop_mode, "size": crop_size}
    reading = {**own, **{k: v for k, v in changed.items() if v is not None}}
    return card.factory(replace(card, preprocess={**card.preprocess, "crops": reading}), threads)


def crop_scores(model, frame: np.ndarray) -> tuple[np.ndarray, list[CropScore]]:
    """(the frame at display size, its crops with their own scores) for an ONNX crop model (``OnnxFrameModel``)."""
    shown, boxes, size, scores = model.crop_scores(frame)
    return shown, [CropScore(y, x, size, float(s)) for (y, x), s in zip(boxes, scores)]


def read_frame(path: str | os.PathLike, index: int) -> np.ndarray:
    """Frame ``index`` (0-based, decode order) of a video, or the picture of an image file."""
    from gameqa.media.image import load_image
    from gameqa.media.kind import is_image
    from gameqa.media.video import iter_frames

    if is_image(path):
        if index != 0:
            raise MediaError(path, f"an image has one frame, not frame {index}")
        return load_image(path)
    last = -1
    for frame in iter_frames(path, "all"):
        last = frame.index
        if frame.index == index:
            return frame.rgb
    raise MediaError(path, f"has {last + 1} frames, no frame {index}")


def draw_crops(frame: np.ndarray, crops: list[CropScore], score_range: tuple[float, float],
               lower_better: bool = False):
    """The frame with each crop outlined, red (worst) to green (best) on the model's range, and its score."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    try:
        font = ImageFont.load_default(size=max(12, frame.shape[0] // 24))
    except TypeError:  # Pillow < 10.1: one small bitmap font
        font = ImageFont.load_default()
    lo, hi = score_range
    width = max(2, frame.shape[0] // 240)
    for c in crops:
        good = (c.score - lo) / (hi - lo) if hi > lo else 0.5
        good = 1.0 - good if lower_better else good
        colour = (int(255 * (1 - good)), int(255 * good), 40)
        draw.rectangle([c.x, c.y, c.x + c.size - 1, c.y + c.size - 1], outline=colour, width=width)
        label = f"{c.score:.2f}"
        box = draw.textbbox((c.x + width + 2, c.y + width + 2), label, font=font)
        draw.rectangle(box, fill=(0, 0, 0))
        draw.text((c.x + width + 2, c.y + width + 2), label, fill=colour, font=font)
    return image


def save_png(image, out: str | os.PathLike) -> None:
    """Write a PIL image as PNG in one step (no half-written file on failure)."""
    if Path(out).is_dir():
        raise GameQAError(out, "is a folder; give a .png file name")
    write_via_temp(out, lambda tmp: image.save(tmp, format="PNG"))
