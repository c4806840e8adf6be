"""Method families. Importing this package registers every built-in method."""

from ponder.methods import cats, core, moe, nested, predictor, skip, teal  # noqa: F401  (each registers itself)
from ponder.methods.registry import METHODS, get_method, make_config, parse_options, register_method

__all__ = ["METHODS", "get_method", "make_config", "parse_options", "register_method"]
