"""Nested method: neurons in importance order, cut into L learners; a token runs a prefix of k learners.

Every k reads one contiguous prefix of the permuted weights, so the executor is a plain GEMV on row slices (the
"pre-sliced" speed of the issue's reference table, no gather). Batches sort tokens by k, so the tokens that run
learner l are a prefix of the sorted batch: one GEMM per learner, each weight block read once.

Shapes: N = tokens, D = hidden, F = neurons, L = learners, S = F / L neurons per learner, k = learners run.
"""

from __future__ import annotations

import torch

from ponder.errors import PonderError
from ponder.methods.base import SparseFFN, budget_grid, scorer, scorer_macs
from ponder.methods.calibrate import fit_regressor
from ponder.methods.nested.config import NestedConfig


class NestedFFN(SparseFFN):
    method = "nested"

    def __init__(self, *, view, activation: str, config: NestedConfig):
        if view.d_ff % config.learners:
            raise PonderError(f"learners={config.learners} does not divide the FFN width {view.d_ff}")
        super().__init__(view=view, activation=activation, budget_grid=budget_grid(config.min_budget))
        self.config = config
        self.learners = config.learners
        self.block = view.d_ff // config.learners
        # The router predicts log ‖y − y_k‖ for k = 0..L−1 (y_k: output of the first k learners).
        self.router = scorer(view, config.rank, self.learners, name="router", min_budget=config.min_budget)
        self.use_neuron_order()  # most important first
        self.static_learners: int | None = None
        """When set, every token runs this many learners and the router is not run (a MatFormer-style static
        width; `ponder.export` writes it as a plain dense checkpoint)."""
        self.forced_learners: torch.Tensor | None = None
        """When set ([N], one entry per token of the next forward), each token runs that many learners and the
        router is not run: how `ponder.eval.oracle` tries routes."""

    def router_macs(self) -> int:
        return scorer_macs(self.router)

    def neuron_macs(self) -> int:
        return self.dense_macs() // self.up.shape[0]

    # --- calibration ------------------------------------------------------------------------------------------
    def prefix_errors(self, x: torch.Tensor) -> torch.Tensor:
        """‖y − y_k‖ for k = 0..L−1 under the permuted weights: [N, L]."""
        h = self.neurons(x, slice(None)).view(x.shape[0], self.learners, self.block)  # [N, L, S]
        parts = torch.einsum("nls,lsd->nld", h, self.down_t.view(self.learners, self.block, -1))  # [N, L, D]
        done = parts.cumsum(1)  # [N, L, D]: y_1 .. y_L, the last is the dense output y
        before = torch.cat([torch.zeros_like(done[:, :1]), done[:, :-1]], dim=1)  # y_0 .. y_{L-1}
        return (done[:, -1:] - before).norm(dim=-1)

    def calibrate(self, inputs: torch.Tensor) -> None:
        config = self.config
        h = torch.cat([self.intermediate(chunk) for chunk in inputs.split(2048)])  # [N, F], original order
        energy = h.square().mean(0) * self.down.square().sum(0)  # mean squared contribution of each neuron
        self.order.copy_(energy.argsort(descending=True))
        self.arrange()
        targets = torch.cat([self.prefix_errors(chunk) for chunk in inputs.split(1024)]).clamp_min(1e-6).log()
        fit_regressor(self.router, inputs, targets, steps=config.steps, lr=config.lr, seed=config.seed)
        predicted = self.router(inputs).cummin(dim=1).values  # [N, L], non-increasing in k
        for index, budget in enumerate(self.budget_grid.tolist()):
            self.thresholds[index] = self._threshold_for(predicted, budget)

    def _threshold_for(self, predicted: torch.Tensor, budget: float) -> float:
        """The predicted-error threshold at which the mean learners run, plus the router, cost `budget`."""
        target = (budget - self.router_macs() / self.dense_macs()) * self.learners  # mean k
        low, high = float(predicted.min()) - 1.0, float(predicted.max()) + 1.0  # k = L at low, 0 at high
        for _ in range(50):
            middle = (low + high) / 2
            if (predicted > middle).sum(1).float().mean() > target:
                low = middle
            else:
                high = middle
        return high

    # --- policy and executors ---------------------------------------------------------------------------------
    def learners_for(self, x: torch.Tensor) -> torch.Tensor:
        """Learners each token runs: [N] (the smallest k whose predicted error is below the threshold)."""
        if self.forced_learners is not None:
            if self.forced_learners.shape != (x.shape[0],):
                raise PonderError(f"forced learners for {self.forced_learners.shape[0]} tokens, got {x.shape[0]}")
            return self.forced_learners
        if self.static_learners is not None:
            return torch.full((x.shape[0],), self.static_learners)
        predicted = self.router(x).cummin(dim=1).values  # [N, L]
        return (predicted > self.threshold).sum(1)

    def _routed(self) -> bool:
        return self.static_learners is None and self.forced_learners is None

    def _count_learners(self, k: torch.Tensor) -> None:
        router = self.router_macs() if self._routed() else 0
        self._count(router + k * self.block * self.neuron_macs())

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.learners_for(x)
        self._count_learners(k)
        mask = torch.arange(self.up.shape[0]) < (k * self.block)[:, None]  # [N, F]
        return self.finish((self.neurons(x, slice(None)) * mask) @ self.down_t)

    def runs_dense(self) -> bool:
        return self._routed() and super().runs_dense()

    def use_fast(self, x: torch.Tensor) -> bool:
        return True  # slices and GEMMs in PyTorch: no kernel needed, any dtype and batch

    def fast_forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.learners_for(x)
        self._count_learners(k)
        if x.shape[0] == 1:
            rows = slice(0, int(k[0]) * self.block)
            return self.finish(self.neurons(x, rows) @ self.down_t[rows])
        k, order = k.sort(descending=True)
        x_sorted = x[order]
        out = torch.zeros_like(x)
        for learner in range(int(k[0])):
            tokens = int((k > learner).sum())  # tokens running this learner: a prefix of the sorted batch
            rows = slice(learner * self.block, (learner + 1) * self.block)
            out[:tokens] += self.neurons(x_sorted[:tokens], rows) @ self.down_t[rows]
        return self.finish(torch.empty_like(out).index_copy_(0, order, out))  # back to token order

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, learners={self.learners}"
