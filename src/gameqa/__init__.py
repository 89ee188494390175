"""gameqa: how good game video and game images look to people."""
from gameqa.errors import ConfigError, GameQAError, MediaError, ModelError

__version__ = "0.1.0"
__all__ = ["GameQAError", "MediaError", "ModelError", "ConfigError", "__version__"]
