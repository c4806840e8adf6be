"""Core method: each sequence's first tokens run dense and vote for neurons; the rest of the sequence runs only
its core neurons.

Sequences: a forward of T > 1 tokens per row starts new sequences (a prompt, or an evaluation window), one core
set per batch row; `start_sequences` starts them explicitly (the lean decoder calls it at every reset). Prefix
tokens are processed in order, so a sequence fed token by token gets the same core set as in one batched forward.
For one sequence, decode slices the core rows into contiguous copies once and runs them through the dense kernel.

Shapes: B = sequences, T = tokens of each in this call, D = hidden, F = neurons, k = core neurons.
"""

from __future__ import annotations

import torch

from ponder.errors import PonderError
from ponder.kernels import native
from ponder.methods.base import SparseFFN, budget_grid, native_token
from ponder.methods.core.config import CoreConfig

CALIBRATION_WINDOW = 512  # tokens per calibration window (ponder.train.capture.calibration_windows)


class CoreFFN(SparseFFN):
    method = "core"

    def __init__(self, *, view, activation: str, config: CoreConfig):
        super().__init__(view=view, activation=activation, budget_grid=budget_grid(config.min_budget))
        self.config = config
        self.register_buffer("down_norms", view.down.detach().norm(dim=0), persistent=False)  # [F]
        self.votes: torch.Tensor | None = None  # [B, F]: prefix votes of each sequence
        self.seen = 0  # tokens of the current sequences processed
        self.core: torch.Tensor | None = None  # [B, k] core neurons, once the prefix is complete
        self.sliced: tuple | None = None  # contiguous core rows of one sequence, for decode

    # --- budget: the core fraction that makes 512-token calibration windows cost `budget` with a dense prefix ----
    def calibrate(self, inputs: torch.Tensor) -> None:
        """Training-free: only the budget → core-fraction map (the prefix runs dense, the rest at the fraction)."""
        prefix, window = self.config.prefix_tokens, CALIBRATION_WINDOW
        if self.min_budget * window < prefix:
            raise PonderError(
                f"min_budget {self.min_budget} is below what the dense prefix costs ({prefix / window:.2f} of "
                f"{window}-token windows): raise min_budget or lower prefix_tokens"
            )
        self.thresholds.copy_(((self.budget_grid * window - prefix) / (window - prefix)).clamp(0, 1))

    def core_size(self) -> int:
        return max(1, round(float(self.threshold) * self.up.shape[0]))

    # --- sequences ----------------------------------------------------------------------------------------------
    def start_sequences(self, batch: int) -> None:
        self.votes = torch.zeros(batch, self.up.shape[0])
        self.seen = 0
        self.core = self.sliced = None

    def set_budget(self, budget: float) -> None:
        super().set_budget(budget)
        if self.votes is not None and self.seen >= self.config.prefix_tokens:
            self._freeze()  # the core of a running sequence follows the new budget

    def _vote(self, h: torch.Tensor) -> None:
        """h [B, t, F]: each token votes for its largest contributions (ties in votes broken by total size)."""
        contribution = h.abs() * self.down_norms  # [B, t, F]
        top = max(1, round(self.config.token_fraction * h.shape[-1]))
        ballots = torch.zeros_like(contribution).scatter_(-1, contribution.topk(top, dim=-1).indices, 1.0)
        self.votes += ballots.sum(1) + contribution.sum(1) / (contribution.sum((1, 2))[:, None] + 1e-9)

    def _freeze(self) -> None:
        self.core = self.votes.topk(self.core_size(), dim=1).indices.sort(dim=1).values  # [B, k]
        self.sliced = None

    # --- forward ------------------------------------------------------------------------------------------------
    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.runs_dense():
            return super().forward(hidden_states)
        x = hidden_states if hidden_states.dim() == 3 else hidden_states.reshape(1, -1, hidden_states.shape[-1])
        B, T, D = x.shape
        if T > 1 or self.votes is None or self.votes.shape[0] != B:
            self.start_sequences(B)
        prefix = min(T, max(0, self.config.prefix_tokens - self.seen))
        parts = []
        if prefix:
            h = self.intermediate(x[:, :prefix])  # [B, p, F]
            self._count(torch.full((B * prefix,), self.dense_macs()))
            self._vote(h)
            parts.append(self.output(h))
            self.seen += prefix
            if self.seen >= self.config.prefix_tokens:
                self._freeze()
        if prefix < T:
            parts.append(self.core_forward(x[:, prefix:]))
            self.seen += T - prefix
        return torch.cat(parts, dim=1).view(hidden_states.shape)

    def core_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens x [B, t, D] after the prefix, through each sequence's core neurons only."""
        B, t, D = x.shape
        self._count(torch.full((B * t,), self.core.shape[1] * (self.dense_macs() // self.up.shape[0])))
        if B == 1 and t == 1 and native_token(x[0]) and self.activation in native.ACTIVATIONS:
            return self._decode(x)
        mask = torch.zeros(B, 1, self.up.shape[0]).scatter_(2, self.core[:, None], 1.0)  # [B, 1, F]
        return self.output(self.intermediate(x) * mask)

    def _decode(self, x: torch.Tensor) -> torch.Tensor:
        """One token of one sequence through contiguous copies of its core rows (sliced once per sequence)."""
        if self.sliced is None:
            rows = self.core[0]
            pick = lambda t: None if t is None else t[rows].contiguous()  # noqa: E731
            self.sliced = (
                pick(self.gate),
                pick(self.up),
                self.down[:, rows].contiguous(),
                pick(self.gate_bias),
                pick(self.up_bias),
            )
        gate, up, down, gate_bias, up_bias = self.sliced
        out = native.glu_dense(
            x.reshape(-1), gate, up, down, self.activation, gate_bias, up_bias, workspace=self.workspace
        )
        return self.finish(out).view(x.shape)

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, D] as one sequence continuing the current one (the eager specification of `forward`)."""
        return self.forward(x[None])[0]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, prefix={self.config.prefix_tokens}"
