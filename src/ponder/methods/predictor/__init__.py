"""Deja Vu-style learned predictor of which neuron blocks matter; skips gate, up and down for the rest."""

from ponder.methods.predictor.config import PredictorConfig
from ponder.methods.predictor.layer import PredictorFFN
from ponder.methods.registry import register_method

register_method("predictor", config_class=PredictorConfig, layer_class=PredictorFFN)
