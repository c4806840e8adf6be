"""ponder: compute-adaptive transformer language models, measured honestly."""

from ponder.errors import DataError, PonderError, UnsupportedModelError
from ponder.models import load

__all__ = ["DataError", "PonderError", "UnsupportedModelError", "load"]
__version__ = "0.1.0"
