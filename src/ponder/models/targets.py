"""Where each architecture keeps its decoder layers, FFN and attention: one small table, keyed by `model_type`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import nn
from transformers import PretrainedConfig

from ponder.errors import UnsupportedModelError

if TYPE_CHECKING:
    from transformers import PreTrainedModel


@dataclass(frozen=True)
class Architecture:
    """Names of the parts ponder touches in one model family."""

    layers: str
    """Dotted path from the causal-LM model to the `ModuleList` of decoder layers."""
    up: str
    """FFN input projection (`up_proj`; `c_fc` in GPT-2)."""
    down: str
    """FFN output projection."""
    act: str
    """Attribute of the FFN module holding its activation function."""
    gate: str | None = None
    """Gate projection of a GLU FFN; None for a plain two-matrix FFN."""
    ffn: str = "mlp"
    """Attribute of a decoder layer holding the FFN module."""
    attention: str = "self_attn"
    """Attribute of a decoder layer holding the attention module."""
    transposed: bool = False
    """True where projections are `Conv1D` with weights stored [in, out] (GPT-2)."""
    rope_decoder: bool = False
    """True for Llama-style blocks (pre-RMSNorm, RoPE, separate q/k/v) that the lean decode path runs natively."""
    width_key: str = "intermediate_size"
    """Config field holding the FFN width (what a sliced export changes)."""


_GLU = dict(layers="model.layers", gate="gate_proj", up="up_proj", down="down_proj", act="act_fn")

ARCHITECTURES: dict[str, Architecture] = {
    "llama": Architecture(**_GLU, rope_decoder=True),
    "mistral": Architecture(**_GLU, rope_decoder=True),
    "qwen2": Architecture(**_GLU, rope_decoder=True),
    "qwen3": Architecture(**_GLU, rope_decoder=True),
    "gemma": Architecture(**_GLU),
    "gemma2": Architecture(**_GLU),
    "gemma3_text": Architecture(**_GLU),
    "gpt2": Architecture(
        layers="transformer.h",
        up="c_fc",
        down="c_proj",
        act="act",
        attention="attn",
        transposed=True,
        width_key="n_inner",
    ),
}


def architecture_of(model: PreTrainedModel | PretrainedConfig) -> Architecture:
    """The adapter for a model or config, or `UnsupportedModelError` naming what is supported."""
    config = model if isinstance(model, PretrainedConfig) else model.config
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCHITECTURES:
        raise UnsupportedModelError(
            f"model type '{model_type}' is not supported; supported: {', '.join(sorted(ARCHITECTURES))} "
            "(add an entry to ponder/models/targets.py to support it)"
        )
    return ARCHITECTURES[model_type]


def decoder_layers(model: PreTrainedModel) -> nn.ModuleList:
    """The model's decoder layers, in order."""
    module: nn.Module = model
    for name in architecture_of(model).layers.split("."):
        module = getattr(module, name)
    assert isinstance(module, nn.ModuleList), f"expected a ModuleList of layers, got {type(module).__name__}"
    return module
