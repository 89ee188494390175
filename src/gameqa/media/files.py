"""The one check every media reader makes first: the path is a regular, non-empty file."""
from __future__ import annotations

import os
import stat

from gameqa.errors import MediaError


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
