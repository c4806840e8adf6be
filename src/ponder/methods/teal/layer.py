"""TEAL: entries of x below a threshold skip their columns of gate/up; small intermediate entries skip their
rows of down. Gate and up are kept input-major (a copy in `layouts.teal_layout`) so a kept input reads one
contiguous row.

Shapes: N = tokens, D = hidden, F = neurons, m = kept inputs, k = kept intermediate entries.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ponder.kernels import layouts, native
from ponder.methods.base import FULL_BUDGET, SparseFFN, budget_grid, quantile
from ponder.methods.teal.config import TealConfig

SPLIT_OFFSETS = (0.0, -0.1, -0.05, 0.05, 0.1, 0.15)
"""Kept fraction of x minus the budget, tried per budget by `split="search"`: on SmolLM2-135M at b = 0.5 keeping
0.55-0.6 of x and 0.3-0.4 of the intermediate cut a layer's output error 3-10 % below the uniform split
(benchmarks/experiments/teal_split.py)."""


class TealFFN(SparseFFN):
    method = "teal"

    def __init__(self, *, view, activation: str, config: TealConfig):
        super().__init__(
            view=view, activation=activation, budget_grid=budget_grid(config.min_budget), threshold_shape=(2,)
        )
        self.config = config
        self.gate_up_width = self.up.shape[0] * (2 if self.gate is not None else 1)  # MACs per kept input
        in_scale, mid_scale = wina_scales(self) if config.score == "wina" else (None, None)
        self.register_buffer("in_scale", in_scale, persistent=False)  # [D] or None (magnitude scores)
        self.register_buffer("mid_scale", mid_scale, persistent=False)  # [F] or None
        gate, up = self.gate, self.up
        with torch.no_grad():
            if in_scale is not None:  # the kernels threshold |x·c| with gate/c and up·d/c, then h·d with down/d
                gate = None if gate is None else gate / in_scale
                up = up * mid_scale[:, None] / in_scale
                self.down_t = self.down_t / mid_scale[:, None]
            self.register_buffer("in_major", layouts.teal_layout(gate, up), persistent=False)  # [D, P·Fp]

    def input_scores(self, x: torch.Tensor) -> torch.Tensor:
        """What the input threshold compares, per entry of x [N, D]."""
        return x.abs() if self.in_scale is None else (x * self.in_scale).abs()

    def mid_scores(self, h: torch.Tensor) -> torch.Tensor:
        """What the intermediate threshold compares, per entry of h [N, F]."""
        return h.abs() if self.mid_scale is None else (h * self.mid_scale).abs()

    def calibrate(self, inputs: torch.Tensor) -> None:
        """Per budget b, the kept fraction a of x (gate/up inputs) and m of the intermediate (down inputs) with
        w·a + (1 - w)·m = b, w = gate/up's share of the FFN's MACs: uniform a = m = b, or the split among
        a = b + SPLIT_OFFSETS with the smallest FFN-output error on calibration tokens (`split="search"`)."""
        w = self.gate_up_width / (self.gate_up_width + self.up.shape[0])
        offsets = SPLIT_OFFSETS if self.config.split == "search" else (0.0,)
        by_fraction: dict[float, list[tuple[int, float]]] = {}  # kept fraction a of x -> [(budget index, m)]
        for g, budget in enumerate(self.budget_grid[:-1].tolist()):
            for offset in offsets:
                a = round(budget + offset, 4)
                m = (budget - w * a) / (1 - w)
                if 0 < a <= 1 and 0 < m <= 1:
                    by_fraction.setdefault(a, []).append((g, m))
        fractions = sorted(by_fraction)
        scores = self.input_scores(inputs)
        tau_in = dict(zip(fractions, quantile(scores, 1 - torch.tensor(fractions)).tolist(), strict=True))
        tau_in.update({a: -1.0 for a in fractions if a >= 1})  # every input, however small
        # The intermediate's thresholds need an FFN pass per kept fraction of x: a 512-token subsample keeps that
        # cheap (786k values per quantile) where all 8192 tokens took 11 minutes for SmolLM2-135M.
        sample = inputs[torch.randperm(inputs.shape[0], generator=torch.Generator().manual_seed(0))[:512]]
        sample_scores = self.input_scores(sample)
        dense = self.output(self.intermediate(sample))  # [S, D]
        best: dict[int, tuple[float, float, float]] = {}  # budget index -> (error, tau_in, tau_mid)
        for a in fractions:  # one FFN pass and one sort per kept fraction of x
            h = self.intermediate(sample * (sample_scores > tau_in[a]))
            candidates, h_scores = by_fraction[a], self.mid_scores(h)
            taus_mid = quantile(h_scores, 1 - torch.tensor([m for _, m in candidates])).tolist()
            for (g, _), tau_mid in zip(candidates, taus_mid, strict=True):
                out = self.output(h * (h_scores > tau_mid))
                error = ((out - dense).norm(dim=1) / dense.norm(dim=1).clamp_min(1e-12)).mean().item()
                if g not in best or error < best[g][0]:
                    best[g] = error, tau_in[a], tau_mid
        for g, (_, tau_a, tau_m) in best.items():
            self.thresholds[g] = torch.tensor([tau_a, tau_m])
        self.thresholds[-1] = -1.0  # budget 1: everything

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        kept_in = self.input_scores(x) > self.threshold[0]  # [N, D]
        h = self.intermediate(x * kept_in)  # [N, F]
        kept_mid = self.mid_scores(h) > self.threshold[1]  # [N, F]
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
        x = x if self.in_scale is None else x * self.in_scale
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
        dense = self.dense_token()
        width, hidden, bias, scale = self.gate_up_width, self.down_t.shape[1], self.down_bias, self.in_scale

        def run(x: torch.Tensor) -> torch.Tensor:
            if self.budget >= FULL_BUDGET:
                return dense(x)
            tau_in, tau_mid = self.threshold_values
            out, kept_in, kept_mid = kernel(x if scale is None else x * scale, tau_in, tau_mid)
            self._count(width * kept_in + hidden * kept_mid)
            return out if bias is None else out.add_(bias)

        run.kernel = kernel  # benchmarks/experiments/decode_kernel_ab.py swaps its function for an older build
        return run


def wina_scales(module: SparseFFN) -> tuple[torch.Tensor, torch.Tensor]:
    """WINA's weight norms: per input of gate/up the norm of its column in both ([D]), per neuron the norm of its
    column of down ([F]; ones for a non-GLU FFN, where the activation forbids moving a scale through up). A zero
    column (an input nothing reads) gets 1: its score is then its magnitude, and it changes nothing."""
    parts = [w for w in (module.gate, module.up) if w is not None]
    columns = torch.cat([w.detach().float() for w in parts]).norm(dim=0)  # [D]
    neurons = module.down.detach().float().norm(dim=0) if module.gate is not None else torch.ones(module.up.shape[0])
    return columns.masked_fill(columns == 0, 1.0), neurons.masked_fill(neurons == 0, 1.0)
