"""TEAL: training-free magnitude thresholding of the FFN projections' inputs."""

from ponder.methods.registry import register_method
from ponder.methods.teal.config import TealConfig
from ponder.methods.teal.layer import TealFFN

register_method("teal", config_class=TealConfig, layer_class=TealFFN)
