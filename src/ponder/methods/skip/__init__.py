"""Layer skip: per token and layer, the whole decoder layer runs or is skipped (its K/V still written)."""

from ponder.methods.registry import register_method
from ponder.methods.skip.config import SkipConfig
from ponder.methods.skip.layer import SkipFFN

register_method("skip", config_class=SkipConfig, layer_class=SkipFFN, captures="residual")
