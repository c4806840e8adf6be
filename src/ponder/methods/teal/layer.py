"""TEAL: entries of x below a threshold skip their columns of gate/up; small intermediate entries skip their
rows of down. Gate and up are kept input-major (a copy in `native.teal_layout`) so a kept input reads one
contiguous row.

Shapes: N = tokens, D = hidden, F = neurons, m = kept inputs, k = kept intermediate entries.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ponder.kernels import native
from ponder.methods.base import FULL_BUDGET, SparseFFN, budget_grid, quantile
from ponder.methods.teal.config import TealConfig


class TealFFN(SparseFFN):
    method = "teal"

    def __init__(self, *, view, activation: str, config: TealConfig):
        super().__init__(
            view=view, activation=activation, budget_grid=budget_grid(config.min_budget), threshold_shape=(2,)
        )
        self.gate_up_width = self.up.shape[0] * (2 if self.gate is not None else 1)  # MACs per kept input
        self.register_buffer("in_major", native.teal_layout(self.gate, self.up), persistent=False)  # [D, P·Fp]

    def calibrate(self, inputs: torch.Tensor) -> None:
        keep = self.budget_grid  # uniform: the same kept fraction at every projection
        tau_in = quantile(inputs.abs(), 1 - keep)  # [G]
        # The intermediate's thresholds need one FFN pass per budget: a 512-token subsample keeps that cheap
        # (786k values per quantile) where all 8192 tokens took 11 minutes for SmolLM2-135M.
        sample = inputs[torch.randperm(inputs.shape[0], generator=torch.Generator().manual_seed(0))[:512]]
        for g, tau in enumerate(tau_in):
            x = sample * (sample.abs() > tau)
            self.thresholds[g, 0] = tau
            self.thresholds[g, 1] = quantile(self.intermediate(x).abs(), 1 - keep[g : g + 1])[0]
        self.thresholds[-1] = -1.0  # budget 1: everything

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        kept_in = x.abs() > self.threshold[0]  # [N, D]
        h = self.intermediate(x * kept_in)  # [N, F]
        kept_mid = h.abs() > self.threshold[1]  # [N, F]
        self._count(self.gate_up_width * kept_in.sum(1) + x.shape[1] * kept_mid.sum(1))
        return self.output(h * kept_mid)

    def _native(self) -> bool:
        """The fused kernel applies: no gate/up biases, a known activation, the library built."""
        plain = self.gate_bias is None and self.up_bias is None and self.activation in native.ACTIVATIONS
        return plain and native.library() is not None

    def fast_forward(self, x: torch.Tensor) -> torch.Tensor | None:
        if not self._native():
            return None
        tau_in, tau_mid = self.threshold_values
        out, kept_in, kept_mid = native.teal_ffn(
            x[0], self.in_major, self.down_t, tau_in, tau_mid, self.activation, self.gate is not None
        )
        if self.down_bias is not None:
            out += self.down_bias
        self._count(self.gate_up_width * kept_in + x.shape[1] * kept_mid)
        return out[None]

    def token_forward(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        if not self._native():
            return None
        kernel = native.TealKernel(self.in_major, self.down_t, self.activation, self.gate is not None)
        dense = native.DenseKernel(self.gate, self.up, self.down, None, None, self.activation)
        width, hidden, dense_macs, bias = self.gate_up_width, self.down_t.shape[1], self.dense_macs(), self.down_bias

        def run(x: torch.Tensor) -> torch.Tensor:
            if self.budget >= FULL_BUDGET:
                out, macs = dense(x), dense_macs
            else:
                tau_in, tau_mid = self.threshold_values
                out, kept_in, kept_mid = kernel(x, tau_in, tau_mid)
                macs = width * kept_in + hidden * kept_mid
            self._count(macs)
            return out if bias is None else out.add_(bias)

        return run
