"""Method families. Importing this package registers every built-in method."""

from ponder.methods import cats, nested, predictor, teal  # noqa: F401  (each registers itself)
from ponder.methods.registry import METHODS, get_method, register_method

__all__ = ["METHODS", "get_method", "register_method"]
