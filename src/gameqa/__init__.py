"""gameqa: how good game video and game images look to people."""
from gameqa.errors import ConfigError, GameQAError, MediaError, ModelError

__version__ = "0.1.0"
__all__ = ["GameQAError", "MediaError", "ModelError", "ConfigError", "__version__", "load"]


def load(*args, **kwargs):
    """``gameqa.load(model)``: a scorer for files and numpy arrays (see gameqa.api)."""
    from gameqa.api import load as _load  # imported late: gameqa.api needs this module's __version__

    return _load(*args, **kwargs)
