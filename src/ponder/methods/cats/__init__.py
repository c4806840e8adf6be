"""CATS: contextually-aware thresholding of the gate activation (training-free)."""

from ponder.methods.cats.config import CatsConfig
from ponder.methods.cats.layer import CatsFFN
from ponder.methods.registry import register_method

register_method("cats", config_class=CatsConfig, layer_class=CatsFFN)
