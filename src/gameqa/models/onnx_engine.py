"""ONNX Runtime engine: runs an exported model on sampled frames in batches, no torch needed.

Preprocessing comes from the ``input`` block of the model's ``model.json``::

    {"layout": "NCHW", "scale": 255.0, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
     "crops": {"size": 448, "count": 4},     # or "resize": [H, W], or neither (whole frame);
                                             # "mode": "texture" picks the most detailed windows
     "display_height": 720}                  # optional: smaller frames are first scaled up (bicubic)
                                             # to this height, as a player shows them on that screen

Frames with a side under ``MIN_SIDE`` pixels are refused, and so are frames so long and thin that, shown at the
display height (and, where their short side is under the crop, scaled up until a crop fits), they would grow past
``MAX_SHOWN_PIXELS`` (``shown_frame``; a large frame that is not scaled passes): a clear error instead of a crash or gigabytes of
memory.

``crops.context`` (rows, optional): each crop goes in with the whole frame squeezed into a strip of that many
rows under it (``with_context``), one image of (size + rows) x size.

Crops are laid out deterministically on an even grid over the frame (no random crops at inference), or with
``"mode": "texture"`` on the windows with the most detail (``texture_boxes``); the engine first scales a frame
whose short side is under the crop up until a crop fits (``shown_frame``; ``crop_boxes`` alone uses such a frame
whole). A frame's score is the mean of its crops' scores. With ``reference``
"full" the model takes the distorted crop and its difference to the reference as 6 channels.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from gameqa.errors import ConfigError, ModelError
from gameqa.models.registry import ModelCard


def _spread_starts(extent: int, size: int, n: int) -> np.ndarray:
    """``n`` crop starts spread from edge to edge; a single crop is centred (not stuck to the top or left)."""
    if n == 1:
        return np.array([max(extent - size, 0) // 2])
    return np.linspace(0, max(extent - size, 0), n).round().astype(int)


def crop_boxes(height: int, width: int, size: int, count: int) -> list[tuple[int, int]]:
    """Top-left corners of ``count`` size x size crops spread evenly over an HxW frame."""
    if height <= size and width <= size:
        return [(0, 0)]
    rows = max(1, round(math.sqrt(count * height / max(width, 1))))
    cols = max(1, math.ceil(count / rows))
    ys = _spread_starts(height, size, rows)
    xs = _spread_starts(width, size, cols)
    boxes = [(int(y), int(x)) for y in ys for x in xs]
    if len(boxes) > count:  # keep an even spread when the grid has spare cells
        keep = np.linspace(0, len(boxes) - 1, count).round().astype(int)
        boxes = [boxes[i] for i in keep]
    return boxes


CROP_MODES = ("grid", "texture", "typical")


def check_crop_mode(mode: str) -> str:
    """``mode`` itself if it names a crop placement; a ConfigError (bad user input) otherwise."""
    if mode not in CROP_MODES:
        raise ConfigError(None, f"crop mode must be one of {', '.join(CROP_MODES)}, not {mode!r}")
    return mode


DETAIL_STEP = 4  # window detail is measured on every 4th pixel in each direction


def window_detail(frame: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate size x size windows every ``size // 4`` pixels (and flush with the far edges) and the detail
    of each: the sum of absolute differences of the green channel (a luma stand-in) to the right and lower
    neighbours, measured at quarter resolution. Returns (tops, lefts, detail), one entry per window."""
    h, w = frame.shape[:2]
    s = DETAIL_STEP
    green = (frame[::s, ::s, 1] if frame.ndim == 3 else frame[::s, ::s]).astype(np.int16)
    detail = np.zeros(green.shape, np.int32)
    detail[:, :-1] += np.abs(np.diff(green, axis=1))
    detail[:-1, :] += np.abs(np.diff(green, axis=0))
    total = np.zeros((detail.shape[0] + 1, detail.shape[1] + 1), np.int64)
    total[1:, 1:] = detail.cumsum(0).cumsum(1)
    step = max(1, size // 4)

    def starts(extent: int) -> np.ndarray:
        last = max(extent - size, 0)
        return np.unique(np.append(np.arange(0, last + 1, step), last))

    ys, xs = np.meshgrid(starts(h), starts(w), indexing="ij")
    ys, xs = ys.ravel(), xs.ravel()
    y0, x0 = ys // s, xs // s  # window corners at the measuring resolution
    y1 = np.minimum((ys + size + s - 1) // s, total.shape[0] - 1)
    x1 = np.minimum((xs + size + s - 1) // s, total.shape[1] - 1)
    return ys, xs, total[y1, x1] - total[y0, x1] - total[y1, x0] + total[y0, x0]


def _apart(box: tuple[int, int], chosen: Sequence[tuple[int, int]], size: int) -> bool:
    """Whether ``box`` overlaps none of ``chosen`` by more than half a crop in both directions."""
    half = size // 2
    return all(abs(box[0] - cy) >= half or abs(box[1] - cx) >= half for cy, cx in chosen)


def texture_boxes(frame: np.ndarray, size: int, count: int) -> list[tuple[int, int]]:
    """Top-left corners of the ``count`` size x size windows with the most detail (``window_detail``), taken
    greedily so that no two overlap by more than half a crop in both directions (then the best remaining ones).
    Compression artefacts show where there is detail; flat sky and walls hide them. Deterministic; about 2 ms for
    a 1080p frame."""
    h, w = frame.shape[:2]
    if h <= size and w <= size:
        return [(0, 0)]
    ys, xs, energy = window_detail(frame, size)
    order = np.lexsort((xs, ys, -energy))  # most detail first; ties top-left first
    chosen: list[tuple[int, int]] = []
    for i in order:
        y, x = int(ys[i]), int(xs[i])
        if _apart((y, x), chosen, size):
            chosen.append((y, x))
            if len(chosen) == count:
                return chosen
    for i in order:  # a small frame: fill up with the best overlapping windows
        box = (int(ys[i]), int(xs[i]))
        if box not in chosen:
            chosen.append(box)
            if len(chosen) == count:
                break
    return chosen


def typical_boxes(frame: np.ndarray, size: int, count: int) -> list[tuple[int, int]]:
    """Top-left corners of ``count`` size x size windows whose detail is typical of the frame: the k-th of them
    is the window nearest the (k + 1/2) / count quantile of all windows' detail (``window_detail``; one window:
    the median), kept apart as ``texture_boxes`` keeps its windows where the frame allows. A whole-frame label
    averages busy and flat parts alike; the busiest window masks an encoder's damage and a flat one hides it.
    Deterministic; as cheap as ``texture_boxes``."""
    h, w = frame.shape[:2]
    if h <= size and w <= size:
        return [(0, 0)]
    ys, xs, energy = window_detail(frame, size)

    def box(i: int) -> tuple[int, int]:
        return int(ys[i]), int(xs[i])

    chosen: list[tuple[int, int]] = []
    for k in range(count):
        target = np.quantile(energy, (k + 0.5) / count)
        order = np.lexsort((xs, ys, np.abs(energy - target)))  # nearest the quantile first; ties top-left first
        pick = (next((b for b in map(box, order) if _apart(b, chosen, size)), None)  # apart implies not chosen
                or next((b for b in map(box, order) if b not in chosen), None))
        if pick is None:
            break
        chosen.append(pick)
    return chosen


def choose_boxes(frame: np.ndarray, size: int, count: int, mode: str = "grid") -> list[tuple[int, int]]:
    """The crops of one frame for ``mode`` ("grid": ``crop_boxes``; "texture": ``texture_boxes``; "typical":
    ``typical_boxes``)."""
    if mode == "texture":
        return texture_boxes(frame, size, count)
    if mode == "typical":
        return typical_boxes(frame, size, count)
    if mode != "grid":
        raise ModelError(None, f"crop mode must be one of {', '.join(CROP_MODES)}, not {mode!r}")
    return crop_boxes(frame.shape[0], frame.shape[1], size, count)


def with_difference(patch: np.ndarray, ref_patch: np.ndarray) -> np.ndarray:
    """A full-reference input: the distorted crop and its difference to the reference (+128, uint8), 6 channels."""
    diff = (patch.astype(np.int16) - ref_patch.astype(np.int16) + 128).clip(0, 255).astype(np.uint8)
    return np.concatenate([patch, diff], axis=2)


def context_strip(frame: np.ndarray, rows: int, width: int) -> np.ndarray:
    """The whole frame squeezed to ``rows`` x ``width`` (aspect not kept): every s-th pixel (s so that at least
    twice the strip's size is left), then a box filter. About 1 ms for a 1080p frame."""
    h, w = frame.shape[:2]
    s = max(1, min(h // (2 * rows), w // (2 * width)))
    from PIL import Image

    small = Image.fromarray(np.ascontiguousarray(frame[::s, ::s, :3]))
    return np.asarray(small.resize((int(width), int(rows)), Image.BOX))


def with_context(patch: np.ndarray, strip: Optional[np.ndarray]) -> np.ndarray:
    """One model input: the crop with the frame's context strip under it (the crop alone without a strip). A
    full-reference crop's difference channels get a strip of 128 (no difference): context shows the distorted
    frame only."""
    if strip is None:
        return patch
    if patch.shape[2] > strip.shape[2]:
        strip = np.concatenate([strip, np.full(strip.shape[:2] + (patch.shape[2] - strip.shape[2],), 128, np.uint8)],
                               axis=2)
    return np.concatenate([patch, strip], axis=0)


def crop_patches(frame: np.ndarray, ref: Optional[np.ndarray], size: int, count: int,
                 mode: str = "grid", context: int = 0) -> list[np.ndarray]:
    """The crops of one (display-size) frame, placed by ``mode`` on the distorted frame; with ``ref`` each crop
    carries its difference to the reference crop at the same place (``with_difference``); with ``context`` rows
    the frame's context strip goes under each crop (``with_context``)."""
    return cut_patches(frame, ref, size, choose_boxes(frame, size, count, mode), context)


def cut_patches(frame: np.ndarray, ref: Optional[np.ndarray], size: int, boxes: Sequence[tuple[int, int]],
                context: int = 0) -> list[np.ndarray]:
    """The ``size`` x ``size`` crops at the top-left corners ``boxes`` (see ``crop_patches``)."""
    strip = context_strip(frame, context, size) if context else None
    if ref is None:
        return [with_context(frame[y:y + size, x:x + size], strip) for y, x in boxes]
    return [with_context(with_difference(frame[y:y + size, x:x + size], ref[y:y + size, x:x + size]), strip)
            for y, x in boxes]


def display_crops(frame: np.ndarray, ref: Optional[np.ndarray], size: int, count: int,
                  display_height: Optional[int], mode: str = "grid", context: int = 0) -> list[np.ndarray]:
    """The engine's crops of one decoded frame: scale up to the display height (``shown_frame``), then
    ``crop_patches``."""
    frame = shown_frame(frame, display_height, size)
    if ref is not None:
        ref = shown_frame(ref, display_height, size)
    return crop_patches(frame, ref, size, count, mode, context)


# ImageNet normalisation of 8-bit RGB (model.json "input": scale, mean, std): what every ImageNet-started backbone here
# was trained on; ERAQUE training, its export and the aesthetic scorer take it from here
IMAGENET_NORMALISATION = {"scale": 255.0, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


def normalise_input(patches: Sequence[np.ndarray], preprocess: dict) -> np.ndarray:
    """N x C x H x W float32, the engine's normalisation (``/scale``, then mean/std tiled over the channels).
    uint8 crops are looked up in a table of the 256 values per channel, computed with the same float32 steps:
    the same numbers, several times faster than the arithmetic on every pixel (which other inputs get)."""
    x = np.stack(patches)
    reps = x.shape[-1] // 3
    scale = np.float32(preprocess.get("scale", 255.0))
    mean = np.asarray(list(preprocess.get("mean", [0.0] * 3)) * reps, np.float32)
    std = np.asarray(list(preprocess.get("std", [1.0] * 3)) * reps, np.float32)
    planes = x.transpose(0, 3, 1, 2)
    if x.dtype != np.uint8:
        y = planes.astype(np.float32) / scale
        return np.ascontiguousarray((y - mean.reshape(1, -1, 1, 1)) / std.reshape(1, -1, 1, 1))
    table = (np.arange(256, dtype=np.float32)[None, :] / scale - mean[:, None]) / std[:, None]
    out = np.empty(planes.shape, np.float32)
    for c in range(planes.shape[1]):
        np.take(table[c], planes[:, c], out=out[:, c], mode="clip")  # uint8 indices: always in range
    return out


def _resize(frame: np.ndarray, hw: Sequence[int], bicubic: bool = False) -> np.ndarray:
    from PIL import Image

    h, w = int(hw[0]), int(hw[1])
    method = Image.BICUBIC if bicubic else Image.BILINEAR
    return np.asarray(Image.fromarray(frame).resize((w, h), method))


MIN_SIDE = 16                   # pixels: a frame with a shorter side is refused
MAX_SHOWN_PIXELS = 8192 * 4320  # an 8K frame: the most a frame may grow to when shown (about 106 MB of RGB)


def shown_size(height: int, width: int, display_height: int | None, crop: int = 0) -> tuple[int, int]:
    """The size (height, width) a ``height`` x ``width`` frame is scored at: scaled up to ``display_height`` as
    ``upscale_to_display`` does, then, if its short side is still under ``crop``, up until a crop fits (frames
    taller or wider than about 9:20 at a small size); a ModelError for frames too small or too thin to score."""
    if min(height, width) < MIN_SIDE:
        raise ModelError(None, f"frame {width}x{height} is too small to score: each side needs at least {MIN_SIDE} px")
    h, w = display_size(height, width, display_height)
    if crop and min(h, w) < crop:
        factor = crop / min(h, w)
        h, w = max(crop, round(h * factor)), max(crop, round(w * factor))
    if (h, w) != (height, width) and h * w > MAX_SHOWN_PIXELS:  # growing it would: large frames at their own size pass
        raise ModelError(None, f"frame {width}x{height} is too long and thin to score: shown at this model's size it "
                               f"would be {w}x{h}, over {MAX_SHOWN_PIXELS / 1e6:.0f} M pixels")
    return h, w


def shown_frame(frame: np.ndarray, display_height: int | None, crop: int = 0) -> np.ndarray:
    """``frame`` at the size the engine scores it (``shown_size``; bicubic when it grows)."""
    h, w = shown_size(frame.shape[0], frame.shape[1], display_height, crop)
    return frame if (h, w) == frame.shape[:2] else _resize(frame, (h, w), bicubic=True)


def display_size(height: int, width: int, display_height: int | None,
                 display_width: int | None = None) -> tuple[int, int]:
    """(height, width) of a frame shown at ``display_height``: a shorter frame goes up to it (width
    ``display_width``, or the frame's aspect kept); a taller one keeps its size."""
    if not display_height or height >= display_height:
        return height, width
    h = int(display_height)
    return h, int(display_width) if display_width else round(width * h / height)


def upscale_to_display(frame: np.ndarray, display_height: int | None, display_width: int | None = None) -> np.ndarray:
    """Scale a frame smaller than ``display_height`` up to it (bicubic; ``display_size``); larger ones stay.
    Labels, the training frame cache and the engine all scale this way."""
    h, w = display_size(frame.shape[0], frame.shape[1], display_height, display_width)
    return frame if (h, w) == frame.shape[:2] else _resize(frame, (h, w), bicubic=True)


class OnnxFrameModel:
    """A registered ONNX model ready to score frames."""

    def __init__(self, card: ModelCard, threads: int = 1):
        import onnxruntime as ort

        self.card = card
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, int(threads))
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                str(card.weights), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(card.weights, f"cannot load ONNX model: {exc}".splitlines()[0]) from None
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        batch_dim = inp.shape[0] if inp.shape else None
        self.fixed_batch = batch_dim if isinstance(batch_dim, int) else None
        pre = card.preprocess
        self.crops = pre.get("crops")
        self.crop_mode = str((self.crops or {}).get("mode", "grid"))
        self.context = int((self.crops or {}).get("context", 0))
        if self.crop_mode not in CROP_MODES:
            raise ModelError(card.weights, f"crops.mode must be one of {', '.join(CROP_MODES)}, not {self.crop_mode!r}")
        self.resize = pre.get("resize")
        self.display_height = pre.get("display_height")
        self.clip = card.score_range

    @classmethod
    def from_card(cls, card: ModelCard, threads: int = 1) -> "OnnxFrameModel":
        return cls(card, threads)

    def _patches(self, frame: np.ndarray, ref: Optional[np.ndarray] = None) -> list[np.ndarray]:
        """The model inputs of one frame (display scaling, then resize or crops); with ``ref``, the distorted
        crops with their difference to the reference's crops at the same places as 6 channels."""
        if self.crops and not self.resize:
            return display_crops(frame, ref, int(self.crops["size"]), int(self.crops.get("count", 1)),
                                 self.display_height, self.crop_mode, self.context)
        frame = shown_frame(frame, self.display_height)
        if ref is not None:
            ref = shown_frame(ref, self.display_height)
        if self.resize:
            frame = _resize(frame, self.resize)
            ref = None if ref is None else _resize(ref, self.resize)
        return [frame if ref is None else with_difference(frame, ref)]

    def crop_scores(self, frame: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int]], int, np.ndarray]:
        """Where the crops of one frame go and each one's own score, before pooling and clipping: (the frame at
        display size, top-left corners, crop side, scores). No-reference crop models only."""
        if self.card.full_reference:
            raise ModelError(self.card.weights, f"model {self.card.name!r} is full-reference: no crop view")
        if self.resize or not self.crops:
            raise ModelError(self.card.weights, f"model {self.card.name!r} reads the whole frame, not crops")
        size = int(self.crops["size"])
        shown = shown_frame(frame, self.display_height, size)
        boxes = choose_boxes(shown, size, int(self.crops.get("count", 1)), self.crop_mode)
        return shown, boxes, size, self._run(self._to_input(cut_patches(shown, None, size, boxes, self.context)))

    def _to_input(self, patches: list[np.ndarray]) -> np.ndarray:
        return normalise_input(patches, self.card.preprocess)

    def _run(self, x: np.ndarray) -> np.ndarray:
        if self.fixed_batch:
            outs = [self.session.run(None, {self.input_name: x[i : i + 1]})[0] for i in range(len(x))]
            out = np.concatenate(outs)
        else:
            out = self.session.run(None, {self.input_name: x})[0]
        return np.asarray(out, dtype=np.float64).reshape(len(x), -1)[:, 0]

    def score_frames(
        self, frames: Sequence[np.ndarray], refs: Optional[Sequence[np.ndarray]] = None
    ) -> np.ndarray:
        """One score per frame: the mean over its crops, clipped to the model's range."""
        if self.card.full_reference and refs is None:
            raise ModelError(None, f"model {self.card.name!r} needs a reference (--ref)")
        groups: dict[tuple[int, int], list[tuple[int, np.ndarray]]] = {}
        for i, frame in enumerate(frames):
            patches = self._patches(frame, refs[i] if self.card.full_reference else None)
            for p in patches:  # crops of frames of one size share a shape: batch them together
                groups.setdefault(p.shape[:2], []).append((i, p))
        sums = np.zeros(len(frames))
        counts = np.zeros(len(frames))
        for items in groups.values():
            scores = self._run(self._to_input([p for _, p in items]))
            for (i, _), s in zip(items, scores):
                sums[i] += s
                counts[i] += 1
        return np.clip(sums / counts, *self.clip)
