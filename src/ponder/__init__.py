"""ponder: compute-adaptive transformer language models, measured honestly."""

from ponder.adaptive import convert, full_budget, get_budget, load, save_adaptive, set_budget, set_policy
from ponder.errors import DataError, PonderError, UnsupportedModelError
from ponder.methods import METHODS, register_method
from ponder.methods.base import MethodConfig, SparseFFN
from ponder.state import AdaptiveState, adaptive_state

__all__ = [
    "METHODS",
    "AdaptiveState",
    "MethodConfig",
    "SparseFFN",
    "DataError",
    "PonderError",
    "UnsupportedModelError",
    "adaptive_state",
    "convert",
    "full_budget",
    "get_budget",
    "load",
    "register_method",
    "save_adaptive",
    "set_budget",
    "set_policy",
]
__version__ = "0.1.0"
