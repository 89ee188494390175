"""Tell a video from an image by its content (magic bytes), not by its file name. An animated GIF, PNG or WebP
is a video (``gameqa.media.animated``)."""
from __future__ import annotations

import os
from typing import Literal

import av
import av.error
from PIL import Image, UnidentifiedImageError

from gameqa.errors import MediaError
from gameqa.media.animated import could_be_animated, is_animated
from gameqa.media.files import AV_READ_OPTIONS, check_media_file

MediaKind = Literal["video", "image"]

_SNIFF_BYTES = 512
# ISO base media brands that hold still images (AVIF, HEIF), not video.
_IMAGE_BRANDS = {b"avif", b"avis", b"heic", b"heix", b"heif", b"mif1", b"msf1"}
_AUDIO_BRANDS = {b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B "}


def media_kind(path: str | os.PathLike) -> MediaKind:
    """``"video"`` or ``"image"``, from the file's leading bytes; when those are not decisive,
    by asking Pillow and then FFmpeg whether they can open it. Anything else is a MediaError."""
    path_text = check_media_file(path)
    try:
        with open(path_text, "rb") as handle:
            head = handle.read(_SNIFF_BYTES)
    except OSError as err:
        raise MediaError(path_text, f"cannot read file ({err.strerror or err})") from err
    sniffed = _sniff(head)
    if sniffed == "image" and could_be_animated(head) and is_animated(path_text):
        return "video"  # an animated GIF, PNG or WebP is a short clip (gameqa.media.animated)
    if sniffed is not None:
        return sniffed
    return _kind_by_opening(path_text)


def is_image(path: str | os.PathLike) -> bool:
    """True for a readable still-image file (by content); False for anything else."""
    try:
        return media_kind(path) == "image"
    except MediaError:
        return False


def is_video(path: str | os.PathLike) -> bool:
    """True for a file whose content looks like video; False for anything else."""
    try:
        return media_kind(path) == "video"
    except MediaError:
        return False


def _sniff(head: bytes) -> MediaKind | None:
    if head.startswith(b"\x89PNG\r\n\x1a\n") or head.startswith(b"\xff\xd8\xff"):
        return "image"
    if head[:6] in (b"GIF87a", b"GIF89a") or head[:4] in (b"II*\x00", b"MM\x00*"):
        return "image"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image"
    if head[:2] == b"BM" and len(head) >= 26 and head[6:10] == b"\x00\x00\x00\x00":
        return "image"  # BMP: "BM", file size, two reserved zero words
    if head[4:8] == b"ftyp":
        if head[8:12] in _AUDIO_BRANDS:
            return None  # M4A and kin: let the opener say it is audio-only
        return "image" if head[8:12] in _IMAGE_BRANDS else "video"
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip"):
        return "video"  # QuickTime without an ftyp box
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video"  # EBML: Matroska / WebM
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video"
    if head.startswith(b"FLV") or head.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"):
        return "video"  # FLV, ASF/WMV
    if head.startswith(b"\x00\x00\x01\xba") or head.startswith(b"\x00\x00\x01\xb3"):
        return "video"  # MPEG program / elementary stream
    if len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:
        return "video"  # MPEG transport stream
    return None


def _kind_by_opening(path: str) -> MediaKind:
    try:
        with Image.open(path):
            return "image"
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError, ValueError):
        pass
    try:
        with av.open(path, mode="r", **AV_READ_OPTIONS) as container:
            pictures = av.stream.Disposition.attached_pic
            name = container.format.name or ""
            if (name == "image2" or name.endswith("_pipe")) and not _first_frame_decodes(container):
                # FFmpeg picked an image reader from the file's name (x.png) and it reads no picture either:
                # a damaged or foreign file, not a one-frame video.
                raise MediaError(path, "not an image or video file that can be read (named like an image, "
                                       "but its content is not one)")
            if any(not (stream.disposition & pictures) for stream in container.streams.video):
                return "video"
            if container.streams.audio:
                raise MediaError(path, "audio-only file: no video stream")
    except av.error.FFmpegError:
        pass
    raise MediaError(path, "not an image or video file that can be read")


def _first_frame_decodes(container) -> bool:
    try:
        return next(container.decode(video=0), None) is not None
    except (av.error.FFmpegError, IndexError):
        return False
