"""A uniform view of any HF FFN (GLU or plain) and its dense reference forward.

Weights are exposed in the `nn.Linear` layout, [out, in], whatever the module stores, so methods and executors
are written once. The views share storage with the model: nothing is copied.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ponder.models.targets import Architecture, architecture_of, decoder_layers


@dataclass
class FFNView:
    """One decoder layer's FFN. D = hidden size, F = FFN width (neurons)."""

    module: nn.Module
    up: torch.Tensor  # [F, D]
    down: torch.Tensor  # [D, F]
    act: Callable[[torch.Tensor], torch.Tensor]
    gate: torch.Tensor | None = None  # [F, D] for GLU FFNs
    up_bias: torch.Tensor | None = None  # [F]
    down_bias: torch.Tensor | None = None  # [D]
    gate_bias: torch.Tensor | None = None  # [F]

    @property
    def is_glu(self) -> bool:
        return self.gate is not None

    @property
    def d_model(self) -> int:
        return self.up.shape[1]

    @property
    def d_ff(self) -> int:
        return self.up.shape[0]

    def macs_per_token(self) -> int:
        """Weight multiply-accumulates of one dense token: D·F per projection (biases are negligible, not counted)."""
        return self.d_model * self.d_ff * (3 if self.is_glu else 2)

    def flops_per_token(self) -> int:
        """Dense FLOPs for one token: 2 per MAC (PaLM, Appendix B convention)."""
        return 2 * self.macs_per_token()

    def weight_bytes(self) -> int:
        """Bytes of FFN weight matrices a dense token reads."""
        return self.macs_per_token() * self.up.element_size()

    def intermediate(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Neuron activations [..., F]: act(gate(x)) * up(x) for GLU, act(up(x)) otherwise."""
        up = nn.functional.linear(hidden_states, self.up, self.up_bias)
        if self.gate is None:
            return self.act(up)
        return self.act(nn.functional.linear(hidden_states, self.gate, self.gate_bias)) * up

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Dense reference forward; equals the HF module's forward."""
        return nn.functional.linear(self.intermediate(hidden_states), self.down, self.down_bias)


def activation_name(model: nn.Module) -> str:
    """The FFN activation's name in the model config (what the C kernels switch on), or 'unknown'."""
    config = model.config
    for key in ("hidden_activation", "hidden_act", "activation_function"):
        if isinstance(getattr(config, key, None), str):
            return getattr(config, key)
    return "unknown"


def _weight(module: nn.Module, transposed: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    weight = module.weight.T if transposed else module.weight
    return weight, getattr(module, "bias", None)


def ffn_view(ffn: nn.Module, arch: Architecture) -> FFNView:
    """View of one FFN module under an architecture's naming."""
    up, up_bias = _weight(getattr(ffn, arch.up), arch.transposed)
    down, down_bias = _weight(getattr(ffn, arch.down), arch.transposed)
    gate, gate_bias = _weight(getattr(ffn, arch.gate), arch.transposed) if arch.gate else (None, None)
    return FFNView(
        module=ffn,
        up=up,
        down=down,
        act=getattr(ffn, arch.act),
        gate=gate,
        up_bias=up_bias,
        down_bias=down_bias,
        gate_bias=gate_bias,
    )


def ffn_views(model: nn.Module) -> list[FFNView]:
    """Views of every decoder layer's FFN, in layer order."""
    arch = architecture_of(model)
    return [ffn_view(getattr(layer, arch.ffn), arch) for layer in decoder_layers(model)]


def _resize(projection: nn.Module, *, outputs: int | None = None, inputs: int | None = None) -> None:
    """Give a Linear or Conv1D new output/input sizes (the weights are placeholders until a state dict loads)."""
    transposed = hasattr(projection, "nf")  # Conv1D stores [in, out]
    weight = projection.weight.T if transposed else projection.weight  # [out, in]
    rows, cols = weight.shape
    weight = weight.new_empty(outputs or rows, inputs or cols)
    projection.weight = nn.Parameter(weight.T.contiguous() if transposed else weight, requires_grad=False)
    if outputs is not None and getattr(projection, "bias", None) is not None:
        projection.bias = nn.Parameter(projection.bias.new_empty(outputs), requires_grad=False)
    if transposed:
        projection.nf, projection.nx = outputs or rows, inputs or cols
    else:
        projection.out_features, projection.in_features = outputs or rows, inputs or cols


def resize_ffn(ffn: nn.Module, arch: Architecture, neurons: int) -> None:
    """Make one FFN module `neurons` wide in place (a per-layer static slice), keeping its class and forward."""
    for name in (arch.gate, arch.up):
        if name:
            _resize(getattr(ffn, name), outputs=neurons)
    _resize(getattr(ffn, arch.down), inputs=neurons)
