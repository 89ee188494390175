"""Backbone names the ERAQUE networks accept (torch-free, so configs validate without importing torch)."""
from __future__ import annotations

from typing import Optional

FIXED = ("efficientnet-lite0", "tiny")
BACKBONES = FIXED + ("mobilenetv2-<width>",)  # e.g. mobilenetv2-0.5: a narrow student


def mobilenet_width(backbone: str) -> Optional[float]:
    """The width multiplier of a ``mobilenetv2-<width>`` name (0.1-1.5), else None."""
    if not backbone.startswith("mobilenetv2-"):
        return None
    try:
        width = float(backbone.split("-", 1)[1])
    except ValueError:
        return None
    return width if 0.1 <= width <= 1.5 else None


def check_backbone(backbone: str) -> str:
    """The name itself if known; ValueError otherwise."""
    if backbone not in FIXED and mobilenet_width(backbone) is None:
        raise ValueError(f"unknown backbone {backbone!r} (choose from {', '.join(BACKBONES)}, width 0.1-1.5)")
    return backbone
