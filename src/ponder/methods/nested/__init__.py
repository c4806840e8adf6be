"""Nested learners (ACM / MatFormer style): importance-ordered neuron blocks, a gate picks how many run."""

from ponder.methods.nested.config import NestedConfig
from ponder.methods.nested.layer import NestedFFN
from ponder.methods.registry import register_method

register_method("nested", config_class=NestedConfig, layer_class=NestedFFN)
