"""CATS: a neuron runs its up and down rows only where |act(gate(x))| exceeds a calibrated threshold.

Shapes: N = tokens, D = hidden, F = neurons, k = active neurons of one token.
"""

from __future__ import annotations

import torch
from torch import nn

from ponder.errors import PonderError
from ponder.kernels import native
from ponder.methods.base import SparseFFN, budget_grid, quantile
from ponder.methods.cats.config import CatsConfig


class CatsFFN(SparseFFN):
    method = "cats"

    def __init__(self, *, view, activation: str, config: CatsConfig):
        if view.gate is None:
            raise PonderError("cats thresholds the gate activation and needs a GLU FFN: use teal for plain FFNs")
        super().__init__(view=view, activation=activation, budget_grid=budget_grid(config.min_budget))

    def neuron_fraction(self, budget: torch.Tensor | float) -> torch.Tensor:
        """Active neurons for a compute budget: the gate costs 1/3 always, up and down 2/3 of the active share."""
        return ((torch.as_tensor(budget) * 3 - 1) / 2).clamp(0, 1)

    def calibrate(self, inputs: torch.Tensor) -> None:
        gate_act = self.act(nn.functional.linear(inputs, self.gate, self.gate_bias)).abs()  # [N, F]
        self.thresholds.copy_(quantile(gate_act, 1 - self.neuron_fraction(self.budget_grid)))
        self.thresholds[-1] = -1.0  # budget 1: every neuron

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_pre = nn.functional.linear(x, self.gate, self.gate_bias)  # [N, F]
        active = self.act(gate_pre).abs() > self.threshold  # [N, F]
        h = self.intermediate(x, gate_pre) * active
        self._count(self.gate.numel() + 2 * x.shape[1] * active.sum(1))
        return self.output(h)

    def fast_forward(self, x: torch.Tensor) -> torch.Tensor | None:
        if self.activation not in native.ACTIVATIONS:
            return None
        out, active = native.cats_ffn(
            x[0],
            self.gate,
            self.up,
            self.down_t,
            self.threshold_values[0],
            self.activation,
            self.gate_bias,
            self.up_bias,
            workspace=self.workspace,
        )
        if self.down_bias is not None:
            out += self.down_bias
        self._count(self.gate.numel() + 2 * x.shape[1] * active)
        return out[None]
