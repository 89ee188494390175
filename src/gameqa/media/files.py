"""The one check every media reader makes first (the path is a regular, non-empty file), and how PyAV opens one."""
from __future__ import annotations

import os
import stat

import av

from gameqa.errors import MediaError

# Metadata in another encoding than UTF-8 (a Latin-1 title) must not stop the pictures from being read: PyAV < 19
# decodes it strictly unless told to replace; PyAV 19 dropped that option (and decodes with surrogateescape).
AV_READ_OPTIONS: dict = {"metadata_errors": "replace"} if int(av.__version__.split(".")[0]) < 19 else {}


def check_media_file(path: str | os.PathLike) -> str:
    """``path`` as text, or a one-line MediaError when it cannot be media at all: missing, a folder, a pipe,
    device or socket (opening a FIFO would block), or empty."""
    path_text = os.fspath(path)
    try:
        info = os.stat(path_text)
    except FileNotFoundError:
        raise MediaError(path_text, "file not found") from None
    except OSError as err:
        raise MediaError(path_text, f"cannot read file ({err.strerror or err})") from None
    if stat.S_ISDIR(info.st_mode):
        raise MediaError(path_text, "is a directory, not a media file")
    if not stat.S_ISREG(info.st_mode):
        raise MediaError(path_text, "not a regular file (a pipe, device or socket)")
    if info.st_size == 0:
        raise MediaError(path_text, "empty file (0 bytes)")
    return path_text
