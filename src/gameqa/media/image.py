"""Still images: PNG, JPEG, WebP, BMP (and whatever else Pillow reads) as upright 8-bit RGB."""
from __future__ import annotations

import os
import re
import struct
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from gameqa.errors import MediaError
from gameqa.media.files import check_media_file

DEFAULT_MAX_PIXELS = 100_000_000
"""Images with more pixels than this are refused before decoding (decompression-bomb guard)."""

_HIGH_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


def load_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image to an H x W x 3 uint8 RGB array, turned upright by its EXIF orientation.

    The size in the header is checked against ``max_pixels`` before any pixel is decoded. Pillow
    also refuses anything over twice its own ``Image.MAX_IMAGE_PIXELS`` (about 179 megapixels by
    default) whatever ``max_pixels`` says. Animated images give their first frame here; ``media_kind`` calls them
    videos, and the video readers read every frame (``gameqa.media.animated``).
    """
    path_text = os.fspath(path)
    check_media_file(path_text)
    with warnings.catch_warnings():
        # Our own limit below decides; Pillow's warning band would only add noise.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(path_text)
        except Image.DecompressionBombError as err:
            pixels = _pixels_in(str(err))
            if pixels is not None and pixels <= max_pixels:
                limit = 2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6
                problem = (f"image too large to decode safely ({pixels / 1e6:.1f} megapixels, over Pillow's "
                           f"{limit:.0f} megapixel limit, PIL.Image.MAX_IMAGE_PIXELS)")
            else:
                problem = _too_large_message(pixels, max_pixels)
            raise MediaError(path_text, problem) from err
        except UnidentifiedImageError as err:
            raise MediaError(path_text, "not an image file that can be read (unknown or damaged format)") from err
        except OSError as err:
            raise MediaError(path_text, f"cannot read image ({err.strerror or err})") from err
        except (ValueError, SyntaxError, EOFError, RuntimeError) as err:  # a damaged header (PNG IHDR, ...)
            raise MediaError(path_text, f"corrupt image header ({_reason(err)})") from err
    with image:
        width, height = image.size
        if width <= 0 or height <= 0:
            raise MediaError(path_text, f"image has no pixels ({width}x{height})")
        if width * height > max_pixels:
            raise MediaError(path_text, _too_large_message(width * height, max_pixels, (width, height)))
        try:
            image.load()
        except (OSError, SyntaxError, ValueError, EOFError, RuntimeError) as err:  # RuntimeError: AVIF payloads
            raise MediaError(path_text, f"truncated or corrupt image ({_reason(err)})") from err
        try:
            upright = ImageOps.exif_transpose(image)
        except (OSError, SyntaxError, ValueError, EOFError, TypeError, struct.error) as err:
            raise MediaError(path_text, f"its EXIF orientation cannot be applied, the EXIF block is malformed "
                                        f"({_reason(err)})") from err
        return _to_rgb_array(upright, path_text)


def _to_rgb_array(image: Image.Image, path: str = "") -> np.ndarray:
    """8-bit RGB from any Pillow mode; 16-bit greyscale is scaled, not clipped; 32-bit float or integer pictures
    (scientific TIFFs), whose scale is unknown, are refused."""
    if image.mode == "F":
        raise MediaError(path, "32-bit float image: its value range is unknown; convert it to 8 or 16 bits")
    if image.mode in _HIGH_BIT_MODES:
        values = np.asarray(image).astype(np.int64)
        if values.max(initial=0) > 65535 or values.min(initial=0) < 0:
            raise MediaError(path, "32-bit integer image with values outside 0-65535: convert it to 8 or 16 bits")
        # "I" holds 16-bit PNGs in some Pillow versions, or plain 8-bit values: scale only the former.
        shift = 8 if image.mode != "I" or values.max(initial=0) > 255 else 0
        grey = np.clip(values >> shift, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # a palette with transparency goes through RGBA (Pillow warns otherwise)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8).copy()


def _too_large_message(pixels: int | None, max_pixels: int, size: tuple[int, int] | None = None) -> str:
    limit = f"the {max_pixels / 1e6:g} megapixel limit"
    if pixels is None:
        return f"image too large to decode safely (over Pillow's decompression-bomb limit; ours is {limit})"
    shown = f"{size[0]}x{size[1]}, " if size else ""
    return f"image too large to decode safely ({shown}{pixels / 1e6:.1f} megapixels, over {limit})"


def _pixels_in(message: str) -> int | None:
    found = re.search(r"\((\d+) pixels\)", message)
    return int(found.group(1)) if found else None


def _reason(err: BaseException) -> str:
    return (str(err) or type(err).__name__).splitlines()[0].strip().rstrip(".")
