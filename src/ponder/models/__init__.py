"""Model loading, per-architecture adapters and the uniform FFN view."""

from ponder.models.ffn import FFNView, ffn_views
from ponder.models.load import DEFAULT_MODEL, load
from ponder.models.targets import ARCHITECTURES, Architecture, architecture_of, decoder_layers

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_MODEL",
    "Architecture",
    "FFNView",
    "architecture_of",
    "decoder_layers",
    "ffn_views",
    "load",
]
