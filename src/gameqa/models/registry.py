"""The model registry: every scorer gameqa can run, learned or classical, behind one interface.

Each entry is a ``ModelCard`` that knows its name, what it scores (video or image), whether it needs a
reference, its score range and direction, its version, its preprocessing and its weight file.
``create_model(name)`` returns a ``FrameModel`` whatever the engine (ONNX Runtime or numpy).
Learned models are found as folders holding ``model.json`` + an ONNX file (CenseoQoE-style), either
bundled under ``gameqa/models/weights/`` or registered at run time with ``register_model_dir``.
"""
from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Optional, Protocol, Sequence

import numpy as np

from gameqa.errors import ConfigError, ModelError, read_config_text

WEIGHTS_DIR = Path(__file__).with_name("weights")
DEFAULT_MODEL = "eraque"  # what `gameqa score`, the API, the service and batches use when no model is named


class FrameModel(Protocol):
    """What every engine provides: scores for a batch of RGB uint8 frames (HxWx3)."""

    card: "ModelCard"

    def score_frames(
        self, frames: Sequence[np.ndarray], refs: Optional[Sequence[np.ndarray]] = None
    ) -> np.ndarray: ...


@dataclass(frozen=True)
class ModelCard:
    """Everything known about one registered model."""

    name: str
    kind: Literal["video", "image"]
    reference: Literal["none", "full"]
    score_range: tuple[float, float]
    lower_better: bool
    version: str
    engine: Literal["onnx", "numpy"]
    description: str = ""
    weights: Optional[Path] = None
    preprocess: dict = field(default_factory=dict)
    pooling: str = "mean"
    bitstream_head: Optional[Path] = None  # a quantiser head on the pooled score (gameqa.models.qp_head), if any
    factory: Optional[Callable[["ModelCard", int], FrameModel]] = field(default=None, compare=False)

    @property
    def full_reference(self) -> bool:
        return self.reference == "full"

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "reference": self.reference,
            "score_range": list(self.score_range),
            "lower_better": self.lower_better,
            "version": self.version,
            "engine": self.engine,
            "pooling": self.pooling,
            "weights": str(self.weights) if self.weights else None,
            "bitstream_head": str(self.bitstream_head) if self.bitstream_head else None,
            "description": self.description,
        }


_REGISTRY: dict[str, ModelCard] = {}
_BUILTINS_LOADED = False


def _same_weights(a: ModelCard, b: ModelCard) -> bool:
    return a.weights is not None and b.weights is not None and Path(a.weights).resolve() == Path(b.weights).resolve()


def register(card: ModelCard, *, replace: bool = False) -> ModelCard:
    """Add a card to the registry. Names are unique: registering the same weight file again is a no-op update,
    another model under a taken name is an error unless ``replace``."""
    old = _REGISTRY.get(card.name)
    if old is not None and not replace and not _same_weights(old, card):
        where = f" (from {old.weights.parent})" if old.weights is not None else " (built in)"
        raise ModelError(card.weights, f"model name {card.name!r} is already taken{where}; use the folder's path "
                                       "as the model, or export it under another --name")
    _REGISTRY[card.name] = card
    return card


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    from gameqa.models import builtin  # noqa: F401  (registers the classical metrics)

    if WEIGHTS_DIR.is_dir():
        for spec in sorted(WEIGHTS_DIR.glob("*/model.json")):
            register(card_from_model_dir(spec.parent), replace=True)


def list_models(pattern: str = "*") -> list[ModelCard]:
    """Registered models whose name matches a shell-style pattern, sorted by name."""
    _load_builtins()
    return [c for n, c in sorted(_REGISTRY.items()) if fnmatch.fnmatch(n, pattern)]


def get_card(name: str) -> ModelCard:
    """The card of a registered model, or of a model folder given by path. A folder is registered under its name
    only when that name is free: a folder never replaces a registered (e.g. bundled) model of the same name."""
    _load_builtins()
    if name in _REGISTRY:
        return _REGISTRY[name]
    path = Path(name)
    if (path / "model.json").is_file():
        card = card_from_model_dir(path)
        if card.name not in _REGISTRY:
            register(card)
        return card
    known = ", ".join(sorted(_REGISTRY))
    raise ModelError(None, f"unknown model {name!r} (known: {known}; `gameqa models` lists them)")


def create_model(name: str, threads: int = 1) -> FrameModel:
    """Build the engine for a registered model (or a model folder)."""
    card = get_card(name)
    if card.factory is None:
        raise ModelError(card.weights, f"model {card.name!r} has no engine")
    return card.factory(card, threads)


_CARD_KEYS = {
    "name", "kind", "reference", "score_range", "lower_better", "version", "description",
    "weights", "input", "pooling", "bitstream_head",
}


def card_from_model_dir(folder: str | Path) -> ModelCard:
    """Read ``model.json`` in a folder (name, ranges, preprocessing) into an ONNX model card."""
    folder = Path(folder)
    spec_path = folder / "model.json"
    text = read_config_text(spec_path, "model description")
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(spec_path, f"cannot read model description: {exc}") from None
    if not isinstance(spec, dict):
        raise ConfigError(spec_path, "model description must be a JSON object")
    unknown = set(spec) - _CARD_KEYS
    if unknown:
        raise ConfigError(spec_path, f"unknown keys {sorted(unknown)}")
    missing = {"name", "kind", "score_range", "version", "weights"} - set(spec)
    if missing:
        raise ConfigError(spec_path, f"missing keys {sorted(missing)}")
    weights = folder / spec["weights"]
    if not weights.is_file():
        raise ModelError(weights, "weight file not found")
    head = None
    if spec.get("bitstream_head"):
        head = folder / spec["bitstream_head"]
        if not head.is_file():
            raise ModelError(head, "quantiser head file not found")
    try:
        lo, hi = (float(v) for v in spec["score_range"])
    except (TypeError, ValueError):
        raise ConfigError(spec_path, f"score_range must be [low, high] numbers, not {spec['score_range']!r}") from None
    if not lo < hi:
        raise ConfigError(spec_path, f"score_range [{lo:g}, {hi:g}]: low must be below high")
    from gameqa.models.onnx_engine import OnnxFrameModel

    return ModelCard(
        name=str(spec["name"]),
        kind=spec["kind"],
        reference=spec.get("reference", "none"),
        score_range=(lo, hi),
        lower_better=bool(spec.get("lower_better", False)),
        version=str(spec["version"]),
        engine="onnx",
        description=str(spec.get("description", "")),
        weights=weights,
        preprocess=dict(spec.get("input", {})),
        pooling=str(spec.get("pooling", "mean")),
        bitstream_head=head,
        factory=OnnxFrameModel.from_card,
    )


def register_model_dir(folder: str | Path, *, replace: bool = False) -> ModelCard:
    """Register an exported model folder so ``create_model`` finds it by name (an error if another model has that
    name, unless ``replace``)."""
    _load_builtins()
    return register(card_from_model_dir(folder), replace=replace)
