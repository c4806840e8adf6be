"""CoreInfer: per-sequence core neurons chosen from the start of the sequence, fixed for the rest of it."""

from ponder.methods.core.config import CoreConfig
from ponder.methods.core.layer import CoreFFN
from ponder.methods.registry import register_method

register_method("core", config_class=CoreConfig, layer_class=CoreFFN)
