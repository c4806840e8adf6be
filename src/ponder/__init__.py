"""ponder: compute-adaptive transformer language models, measured honestly.

The public names below load on first use: `import ponder.errors` (which every module does) or a quantized run
should not pay for transformers' modelling code and every method, seconds and ~140 MB on this machine.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ponder.errors import DataError, PonderError, UnsupportedModelError

_LAZY = {
    "convert": "ponder.adaptive",
    "full_budget": "ponder.adaptive",
    "get_budget": "ponder.adaptive",
    "load": "ponder.adaptive",
    "save_adaptive": "ponder.adaptive",
    "set_budget": "ponder.adaptive",
    "set_policy": "ponder.adaptive",
    "METHODS": "ponder.methods",
    "register_method": "ponder.methods",
    "MethodConfig": "ponder.methods.base",
    "SparseFFN": "ponder.methods.base",
    "AdaptiveState": "ponder.state",
    "adaptive_state": "ponder.state",
}

if TYPE_CHECKING:
    from ponder.adaptive import convert, full_budget, get_budget, load, save_adaptive, set_budget, set_policy
    from ponder.methods import METHODS, register_method
    from ponder.methods.base import MethodConfig, SparseFFN
    from ponder.state import AdaptiveState, adaptive_state


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ponder' has no attribute '{name}'")


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
