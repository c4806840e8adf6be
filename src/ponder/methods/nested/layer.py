"""Nested method: neurons in importance order, cut into L learners; a token runs a prefix of k learners.

Every k reads one contiguous prefix of the permuted weights, so the executor is a plain GEMV on row slices (the
"pre-sliced" speed of the issue's reference table, no gather). Batches sort tokens by k, so the tokens that run
learner l are a prefix of the sorted batch: one GEMM per learner, each weight block read once.

Shapes: N = tokens, D = hidden, F = neurons, L = learners, S = F / L neurons per learner, k = learners run.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch import nn

from ponder.errors import PonderError
from ponder.kernels import native
from ponder.methods.base import FULL_BUDGET, SparseFFN, budget_grid, check_gate_cost, native_token, scorer, scorer_macs
from ponder.methods.calibrate import fit_regressor
from ponder.methods.nested.budget_gate import control_inputs, error_levels, fit_budget_gate, make_budget_gate
from ponder.methods.nested.config import NestedConfig
from ponder.train.tune import budgets_between, inputs_at_each_budget, tune_gates

FEEDBACK_TOKENS = 2048  # calibration tokens the closed-loop controller runs on
FEEDBACK_ROUNDS = 2


def _run_at(module: NestedFFN, index: int, budget: float) -> None:
    """A module at grid budget `index` with that budget's current input, as the controller loop last set it."""
    module.budget, module.threshold = budget, module.thresholds[index]


def _mean_of(functions: list[Callable[[float], float]], u: float) -> float:
    return sum(f(u) for f in functions) / len(functions)


class NestedFFN(SparseFFN):
    method = "nested"

    def __init__(self, *, view, activation: str, config: NestedConfig):
        if view.d_ff % config.learners:
            raise PonderError(f"learners={config.learners} does not divide the FFN width {view.d_ff}")
        super().__init__(view=view, activation=activation, budget_grid=budget_grid(config.min_budget))
        self.config = config
        self.learners = config.learners
        self.block = view.d_ff // config.learners
        if config.router == "budget":  # which learners a token needs, given the budget (one logit per learner)
            rank = max(1, min(config.rank, view.d_model // 8))
            gate = make_budget_gate(config.budget_gate, view.d_model, rank, self.learners, view.up.dtype)
            self.router = check_gate_cost(gate, view, name="router", min_budget=config.min_budget)
        else:  # log ‖y − y_k‖ for k = 0..L−1 (y_k: output of the first k learners); thresholds hold error levels
            self.router = scorer(view, config.rank, self.learners, name="router", min_budget=config.min_budget)
        self.use_neuron_order()  # most important first
        self.register_buffer("prefix_rows", torch.arange(view.d_ff), persistent=False)  # row indices for C
        self.static_learners: int | None = None
        """When set, every token runs this many learners and the router is not run (a MatFormer-style static
        width; `ponder.methods.nested.export` writes it as a plain dense checkpoint)."""
        self.forced_learners: torch.Tensor | None = None
        """When set ([N], one entry per token of the next forward), each token runs that many learners and the
        router is not run: how `ponder.methods.nested.oracle` tries routes."""
        self.tuning: float | None = None
        """The budget input while the end-to-end phase trains the router (`ponder.train.tune`): forward runs the
        router's hard choices and passes gradients through their relaxation."""
        self.tuned_compute: list[torch.Tensor] = []  # per token, fraction of the FFN run, of each tuning forward

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
        errors = torch.cat([self.prefix_errors(chunk) for chunk in inputs.split(1024)]).clamp_min(1e-6).log()
        router_cost = self.router_macs() / self.dense_macs()
        lengths = (self.budget_grid - router_cost) * self.learners  # [G], mean learners each budget affords
        fit = {"steps": config.steps, "lr": config.lr, "seed": config.seed}
        if config.router == "budget":
            fit_budget_gate(self.router, inputs, errors.cummin(dim=1).values, self.budget_grid, lengths, **fit)
            self.calibrate_controller(inputs)
        else:
            fit_regressor(self.router, inputs, errors, **fit)
            predicted = self.router(inputs).cummin(dim=1).values  # [N, L], non-increasing in k
            self.thresholds.copy_(error_levels(predicted, lengths))

    def compute_at(self, inputs: torch.Tensor, u: float) -> float:
        """Mean fraction of the FFN the budget-taking router spends on FFN inputs [N, D] at budget input u."""
        learners = float(self.router.needed(inputs, u).float().mean())
        return self.router_macs() / self.dense_macs() + learners / self.learners

    def calibrate_controller(self, inputs: torch.Tensor) -> None:
        """Budget inputs of the budget-taking router that meet each budget of the grid on FFN inputs [N, D]."""
        inputs_for = control_inputs(partial(self.compute_at, inputs), self.budget_grid.tolist())
        self.thresholds.copy_(torch.tensor(inputs_for))

    @staticmethod
    def refine_jointly(
        modules: list[NestedFFN], model: nn.Module, windows: torch.Tensor, pool: Callable[[], torch.Tensor], *,
        work: Path, progress: bool = False,
    ) -> None:  # fmt: skip
        """After every layer is calibrated (router=budget only): if config.tune_steps, the end-to-end phase on
        windows drawn from `pool()` (all the calibration text, tokenized only then); then the controller in closed
        loop on the calibration `windows`. Tuned gates share one budget input (the allocation across layers the
        phase learned is kept), untuned ones keep one each."""
        config = modules[0].config
        if config.router != "budget":
            return
        if config.tune_steps:
            budgets = budgets_between(modules[0].budget_grid, config.tune_min_budget)
            tune_gates(model, modules, pool(), budgets, steps=config.tune_steps, seed=config.seed, work=work,
                       progress=progress)  # fmt: skip
        NestedFFN.control_in_closed_loop(modules, model, windows, shared=bool(config.tune_steps), progress=progress)

    @staticmethod
    @torch.no_grad()
    def control_in_closed_loop(
        modules: list[NestedFFN], model: nn.Module, windows: torch.Tensor, *, shared: bool, progress: bool = False
    ) -> None:
        """Set the budget inputs of every grid budget where the adaptive model itself meets it on `windows`.

        Each layer's controller was first set on the dense model's FFN inputs, but running fewer learners shifts
        later layers' inputs (on SmolLM2 low budgets then overspent). Per budget: run the adaptive
        model, capture what each layer actually receives, set the inputs again on that; twice. `shared`: one input
        for all layers, at which their mean compute meets the budget; else one per layer, each meeting it."""
        batch = windows.reshape(-1)[:FEEDBACK_TOKENS].view(-1, windows.shape[-1])
        grid = modules[0].budget_grid.tolist()
        walk = inputs_at_each_budget(
            model, modules, batch, _run_at, rounds=FEEDBACK_ROUNDS, desc="nested controller", progress=progress
        )
        for index, inputs in walk:
            budget = grid[index]
            spent = [partial(m.compute_at, x) for m, x in zip(modules, inputs, strict=True)]
            if shared:
                updates = control_inputs(partial(_mean_of, spent), [budget]) * len(modules)
            else:
                updates = [control_inputs(f, [budget])[0] for f in spent]
            for module, value in zip(modules, updates, strict=True):
                module.thresholds[index] = value
        for module in modules:  # a lower budget never gets a larger input
            module.thresholds.copy_(module.thresholds.cummax(0).values)
            module.set_budget(FULL_BUDGET)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.tuning is None:
            return super().forward(hidden_states)
        x = hidden_states.reshape(-1, hidden_states.shape[-1])  # [N, D]
        logits = self.router(x, self.tuning)  # [N, L]
        hard = (logits.cummin(dim=1).values > 0).to(x.dtype)  # learner j runs: every logit up to j is positive
        soft = torch.sigmoid(logits).cumprod(dim=1)
        mask = hard + soft - soft.detach()  # the hard choices forward, their relaxation's gradient backward
        self.tuned_compute.append(mask.mean(1))
        h = self.neurons(x, slice(None)).view(x.shape[0], self.learners, self.block) * mask[..., None]
        return self.finish(h.flatten(1) @ self.down_t).view(hidden_states.shape)

    # --- policy and executors ---------------------------------------------------------------------------------
    def learners_for(self, x: torch.Tensor) -> torch.Tensor:
        """Learners each token runs: [N] (forced, static, or what the router chooses at the current budget)."""
        if self.forced_learners is not None:
            if self.forced_learners.shape != (x.shape[0],):
                raise PonderError(f"forced learners for {self.forced_learners.shape[0]} tokens, got {x.shape[0]}")
            return self.forced_learners
        if self.static_learners is not None:
            return torch.full((x.shape[0],), self.static_learners)
        if self.config.router == "budget":
            return self.router.needed(x, self.threshold)  # the threshold holds the budget input
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
            rows = int(k[0]) * self.block
            if rows and native_token(x) and self.activation in native.ACTIVATIONS:  # the prefix's rows, in C
                out = native.glu_rows(x[0], self.gate_p, self.up_p, self.down_t, self.prefix_rows[:rows],
                                      self.activation, self.gate_bias_p, self.up_bias_p,
                                      workspace=self.workspace)  # fmt: skip
                return self.finish(out[None])
            return self.finish(self.neurons(x, slice(0, rows)) @ self.down_t[:rows])
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
