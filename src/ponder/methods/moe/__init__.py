"""Dense → dynamic MoE: clustered experts, shared experts, a learned router, routing policies, pseudo experts."""

from ponder.methods.moe.config import MoEConfig
from ponder.methods.moe.layer import MoEFFN
from ponder.methods.registry import register_method

register_method("moe", config_class=MoEConfig, layer_class=MoEFFN)
