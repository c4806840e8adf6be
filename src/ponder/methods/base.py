"""The method contract, and what every sparse-FFN method shares: weights in the layouts executors need, the budget
knob, telemetry.

A method is a `MethodConfig` dataclass of its options and one `SparseFFN` subclass, registered by name
(`ponder.register_method`). The core (conversion, loading, eval, bench, decode, reports) calls only the hooks
documented on `SparseFFN` under "the contract" and never probes a module for attributes; every optional hook has a
default here, so a method overrides only what it does. A method supplies a policy: which neurons (or inputs) each
token uses at the current threshold, in an eager reference form (the specification, `reference_forward`) and
optionally a fast batch-1 form (`fast_forward`). Thresholds are calibrated on a grid of budgets and interpolated
at run time, so `set_budget(b)` works on a loaded model without recalibration.

Shapes: N = tokens, D = hidden size, F = FFN neurons, G = budgets in the calibrated grid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from ponder.errors import PonderError
from ponder.kernels import native
from ponder.models.ffn import FFNView

FULL_BUDGET = 1.0


def _parameter(t: torch.Tensor | None) -> nn.Parameter | None:
    if t is None or (isinstance(t, nn.Parameter) and t.is_contiguous()):
        return t
    return nn.Parameter(t.detach().contiguous(), requires_grad=False)


def _rows(t: torch.Tensor | None, rows: slice | torch.Tensor) -> torch.Tensor | None:
    return None if t is None else t[rows]


def budget_grid(min_budget: float, step: float = 0.05) -> torch.Tensor:
    """Budgets thresholds are calibrated at: min_budget, then multiples of `step`, up to 1."""
    points = [min_budget] + [k * step for k in range(1, round(1 / step) + 1) if k * step > min_budget + 1e-9]
    return torch.tensor(points, dtype=torch.float32)


def check_calibrated(budget: float, min_budget: float, method: str) -> float:
    """`budget` as a float, if it is a budget and not below the lowest the thresholds were calibrated for."""
    budget = check_budget(budget)
    if budget < min_budget - 1e-6:
        raise PonderError(
            f"budget {budget} is below the lowest calibrated for {method} ({min_budget:.2f}): "
            "use a higher budget or reconvert with a lower --min-budget"
        )
    return budget


def interpolate_thresholds(grid: torch.Tensor, thresholds: torch.Tensor, budget: float) -> torch.Tensor:
    """The thresholds at `budget`, linear between the calibrated budgets `grid` [G] (ascending) of `thresholds`
    [G, ...]: what `set_budget` runs, shared with executors that read a saved table (the quantized runtime)."""
    upper = int(torch.searchsorted(grid, torch.tensor(budget)).clamp(1, len(grid) - 1))
    weight = (budget - grid[upper - 1]) / (grid[upper] - grid[upper - 1])
    return torch.lerp(thresholds[upper - 1], thresholds[upper], weight.clamp(0, 1))


def quantile(values: torch.Tensor, q: torch.Tensor, sample: int = 4_000_000) -> torch.Tensor:
    """Quantiles of a large tensor (torch.quantile refuses more than 16M elements): on a fixed subsample."""
    flat = values.reshape(-1).float()
    if flat.numel() > sample:
        flat = flat[torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(0))[:sample]]
    return torch.quantile(flat, q.clamp(0, 1).float())


def native_token(x: torch.Tensor) -> bool:
    """One fp32 token [1, D] and the C kernels built: the decode executors apply."""
    return x.shape[0] == 1 and x.dtype == torch.float32 and native.library() is not None


def check_budget(budget: float) -> float:
    if not isinstance(budget, int | float) or not 0.0 < float(budget) <= 1.0:
        raise PonderError(f"budget {budget} is outside (0, 1]: give the target fraction of dense FFN compute")
    return float(budget)


def scorer(view: FFNView, rank: int, outputs: int, *, name: str, min_budget: float) -> nn.Sequential:
    """A frozen Linear-SiLU-Linear network from the FFN input to `outputs` scores (predictors, routers). Its hidden
    width is at most d_model / 8 so small models get a proportionally small one."""
    rank = max(1, min(rank, view.d_model // 8))
    net = nn.Sequential(nn.Linear(view.d_model, rank), nn.SiLU(), nn.Linear(rank, outputs)).to(view.up.dtype)
    return check_gate_cost(net.requires_grad_(False), view, name=name, min_budget=min_budget)


def check_gate_cost(net: nn.Module, view: FFNView, *, name: str, min_budget: float) -> nn.Module:
    """`net`, if it costs less than the lowest budget (every token pays for it); else a clear error."""
    cost = scorer_macs(net) / view.macs_per_token()
    if cost >= min_budget:
        raise PonderError(
            f"the {name} costs {cost:.2f} of the FFN, more than min_budget {min_budget}: "
            "lower the rank or raise min_budget"
        )
    return net


def scorer_macs(net: nn.Module) -> int:
    """MACs per token of a small network of Linear layers."""
    return sum(layer.weight.numel() for layer in net.modules() if isinstance(layer, nn.Linear))


@dataclass
class MethodConfig:
    """Base of every method's options: a dataclass whose fields are the options (each documented where declared),
    validated in `__post_init__`, round-tripping through JSON via `dataclasses.asdict`."""

    SAVED_BEFORE: ClassVar[dict] = {}
    """Values of options added after models were already saved: a saved config lacking an option loads with the
    value here (what those models were converted with), not the field's default. Empty: every option was there."""


@dataclass(slots=True)
class Tally:
    """FFN work counted since the last `pop_compute`. A plain object, because every attribute set on an nn.Module
    goes through its __setattr__ (about 5 µs here): counting on the module cost 0.4 ms a decoded token over 30
    layers (cProfile of a moe decode)."""

    tokens: int = 0
    macs: int = 0
    seen_tokens: int = 0
    """Counted since the module was made, never reset (what `ponder.control.BudgetController` reads)."""
    seen_macs: int = 0


class SparseFFN(nn.Module):
    """An FFN whose active neurons vary per token. Exact (the dense module's own math) at budget 1."""

    method: str = "sparse"
    policy: str | None = None
    """The routing policy in use (routed methods, `set_policy`); None for methods without policies."""
    whole_layer: ClassVar[bool] = False
    """True for depth methods: the module decides per token whether the whole decoder layer runs (`attach` hooks
    the layer; the lean decoder asks `decide` and leaves skipped tokens with `passed_through`), not which of the
    FFN's neurons do."""
    joint_thresholds: ClassVar[bool] = False
    """True where `calibrate_jointly` sets one threshold across all layers (a per-layer allocation cannot apply)."""

    def __init__(self, *, view: FFNView, activation: str, budget_grid: torch.Tensor, threshold_shape: tuple = ()):
        super().__init__()
        # Dense weights stay shared with the original module where already in [out, in] layout (no copy).
        self.gate = _parameter(view.gate)  # [F, D]
        self.up = _parameter(view.up)  # [F, D]
        self.down = _parameter(view.down)  # [D, F]
        self.gate_bias, self.up_bias, self.down_bias = map(_parameter, (view.gate_bias, view.up_bias, view.down_bias))
        self.act = view.act
        self.activation = activation
        # Neuron-major rows of the down projection, so an active neuron's output weights are contiguous.
        self.register_buffer("down_t", view.down.detach().t().contiguous(), persistent=False)  # [F, D]
        self.register_buffer("budget_grid", budget_grid.float())  # [G], ascending, ends at 1
        self.register_buffer("thresholds", torch.zeros(len(budget_grid), *threshold_shape))  # [G, ...]
        self.budget = FULL_BUDGET
        self.threshold = self.thresholds[-1]
        self.threshold_values = self.threshold.reshape(-1).tolist()
        self.tally = Tally()
        self.workspace = native.Workspace()  # scratch of this module's one-token kernel calls
        self.trace: list[torch.Tensor] | None = None  # per-token MAC fractions, kept while a ComputeTrace runs

    # --- the contract: hooks the core calls ------------------------------------------------------------------
    def calibrate(self, *captures: torch.Tensor) -> None:
        """Required. Fit this layer's thresholds (one per `budget_grid` budget) and any parts (routers, gates) on
        its calibration captures (`Method.captures`): the FFN inputs [N, D], or the residual stream before and
        after the layer, two [N, D]. Runs once per layer; the tensors it creates are what a save writes."""
        raise NotImplementedError(f"{type(self).__name__} must implement calibrate")

    @staticmethod
    def calibrate_jointly(
        modules: list[SparseFFN], model: nn.Module, windows: torch.Tensor, *, progress: bool = False
    ) -> None:
        """After every layer's `calibrate`: thresholds that depend on all layers together, on calibration token
        windows [W, L] run through `model` (set `joint_thresholds` if it shares one across layers). Default: none."""

    @staticmethod
    def refine_jointly(
        modules: list[SparseFFN], model: nn.Module, windows: torch.Tensor, pool: Callable[[], torch.Tensor], *,
        work: Path, progress: bool = False,
    ) -> None:  # fmt: skip
        """Last conversion step: end-to-end tuning over all layers on windows from `pool()` (all the calibration
        text), checkpoints under `work`; every torchrun rank runs it with the same seeds. Default: none."""

    def attach(self, layer: nn.Module) -> None:
        """Called once the module replaced the FFN of decoder layer `layer` (on conversion and on load): depth
        methods hook the layer here. Default: nothing."""

    def set_policy(self, policy: str) -> None:
        """Switch the routing policy (`ponder ... --policy`) without recalibrating. Default: the method has none."""
        raise PonderError(f"a {self.method} model has no routing policies: --policy applies to routed methods")

    def start_sequences(self, batch_size: int) -> None:
        """New sequences begin (a decoder's reset): methods with per-sequence state clear it. Default: nothing."""

    def start_routing_stats(self) -> None:
        """Begin collecting routing statistics (`ponder inspect`). Default: nothing (the method does not route)."""

    def routing_stats(self) -> dict | None:
        """Stop collecting and return a summary of what routing did since `start_routing_stats` (numbers and
        shares for a report, e.g. experts_per_token, pseudo_share), or None where the method does not route."""
        return None

    # --- budget -------------------------------------------------------------------------------------------
    @property
    def min_budget(self) -> float:
        return float(self.budget_grid[0])

    def set_budget(self, budget: float) -> None:
        """Interpolate the calibrated thresholds for `budget` (a fraction of dense FFN compute)."""
        budget = check_calibrated(budget, self.min_budget, self.method)
        self.threshold = interpolate_thresholds(self.budget_grid, self.thresholds, budget)
        self.threshold_values = self.threshold.reshape(-1).tolist()  # for kernels: no tensor→float per token
        self.budget = budget

    # --- telemetry (ponder.stats.ReportsCompute) --------------------------------------------------------------
    def dense_macs(self) -> int:
        return self.up.numel() * (3 if self.gate is not None else 2)

    def element_size(self) -> int:
        return self.up.element_size()

    def pop_compute(self) -> tuple[int, int]:
        tally = self.tally
        counts = (tally.tokens, tally.macs)
        tally.tokens = tally.macs = 0
        return counts

    def pop_trace(self) -> torch.Tensor:
        """Fractions of dense FFN MACs each token used since the last call, in token order: [N]."""
        parts, self.trace = self.trace or [], []
        return torch.cat(parts) if parts else torch.zeros(0)

    def _count(self, macs: torch.Tensor | int) -> None:
        """Record work done: MACs per token ([N]), or an int for a single token."""
        tally = self.tally
        if isinstance(macs, int) and self.trace is None:  # one decode token: no tensor work on the hot path
            tally.tokens += 1
            tally.macs += macs
            tally.seen_tokens += 1
            tally.seen_macs += macs
            return
        per_token = torch.as_tensor(macs, dtype=torch.int64).reshape(-1)
        total = int(per_token.sum())
        tally.tokens += per_token.numel()
        tally.macs += total
        tally.seen_tokens += per_token.numel()
        tally.seen_macs += total
        if self.trace is not None:
            self.trace.append(per_token.double() / self.dense_macs())

    # --- permuted neurons (methods whose parts are contiguous blocks of a neuron order) -------------------------
    def use_neuron_order(self) -> None:
        """Keep a neuron order (saved with the model) and permuted copies of the projections in it, so every part
        is a contiguous block of rows. The dense path keeps the original weights, so budget 1 stays exact."""
        self.register_buffer("order", torch.arange(self.up.shape[0]))  # [F]
        self.register_load_state_dict_post_hook(lambda module, _: module.arrange())
        self.arrange()

    @torch.no_grad()
    def arrange(self) -> None:
        """(Re)build the permuted copies after `order` changed."""
        order = self.order
        self.register_buffer("gate_p", None if self.gate is None else self.gate[order].contiguous(), persistent=False)
        self.register_buffer("up_p", self.up[order].contiguous(), persistent=False)
        self.register_buffer("down_t", self.down.t()[order].contiguous(), persistent=False)  # [F, D]
        self.register_buffer("gate_bias_p", _rows(self.gate_bias, order), persistent=False)
        self.register_buffer("up_bias_p", _rows(self.up_bias, order), persistent=False)

    def neurons(self, x: torch.Tensor, rows: slice | torch.Tensor) -> torch.Tensor:
        """Activations of the permuted neurons `rows` for x [N, D]: [N, |rows|]."""
        up = nn.functional.linear(x, self.up_p[rows], _rows(self.up_bias_p, rows))
        if self.gate_p is None:
            return self.act(up)
        return self.act(nn.functional.linear(x, self.gate_p[rows], _rows(self.gate_bias_p, rows))) * up

    def finish(self, out: torch.Tensor) -> torch.Tensor:
        """Add the down projection's bias, which every token's output carries whatever ran."""
        return out if self.down_bias is None else out + self.down_bias

    # --- forward ------------------------------------------------------------------------------------------
    def intermediate(self, x: torch.Tensor, gate_pre: torch.Tensor | None = None) -> torch.Tensor:
        """Neuron activations [N, F] of the dense FFN (optionally reusing a computed gate projection)."""
        up = nn.functional.linear(x, self.up, self.up_bias)
        if self.gate is None:
            return self.act(up)
        if gate_pre is None:
            gate_pre = nn.functional.linear(x, self.gate, self.gate_bias)
        return self.act(gate_pre) * up

    def output(self, h: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(h, self.down, self.down_bias)

    def dense_forward(self, x: torch.Tensor) -> torch.Tensor:
        if native_token(x) and self.activation in native.ACTIVATIONS:  # one token: the kernel the methods use
            self._count(self.dense_macs())
            out = native.glu_dense(x[0], self.gate, self.up, self.down, self.activation, self.gate_bias, self.up_bias,
                                   workspace=self.workspace)  # fmt: skip
            return self.finish(out[None])
        self._count(torch.full((x.shape[0],), self.dense_macs()))
        return self.output(self.intermediate(x))

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The method's eager masked computation on [N, D]: the specification fast paths are tested against."""
        raise NotImplementedError

    def fast_forward(self, x: torch.Tensor) -> torch.Tensor | None:
        """A fast path for x [N, D] (for most methods: one fp32 token, native kernel), or None where it does not
        apply; `use_fast` says when it is tried."""
        return None

    def use_fast(self, x: torch.Tensor) -> bool:
        return native_token(x)

    def token_forward(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """For the lean decoder: a callable running one fp32 token x [D] to its output [D] (a reused buffer, counted
        like `forward`) with the kernel's arguments bound once, or None where the method has none (the decoder
        then calls the module). Binds the current tensors: build it again after moving the module.
        By default: `rows_forward` without the module call and reshapes, for methods that keep this class's
        `forward`."""
        if type(self).forward is not SparseFFN.forward:
            return None
        dense = self.dense_token()
        if dense is None:
            return lambda x: self.rows_forward(x[None])[0]
        return lambda x: dense(x) if self.runs_dense() else self.rows_forward(x[None])[0]

    def dense_token(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """Budget 1 for the lean decoder: the dense kernel with its arguments bound once, counted, down bias added,
        so an adaptive model at budget 1 decodes as fast as the dense model it came from (through `rows_forward`
        it ran 4-6 % slower, benchmarks/results/baseline-check-s16.txt). None where the kernel does not apply."""
        if self.activation not in native.ACTIVATIONS or native.library() is None:
            return None
        kernel = native.DenseKernel(self.gate, self.up, self.down, self.gate_bias, self.up_bias, self.activation)
        macs, bias = self.dense_macs(), self.down_bias

        def run(x: torch.Tensor) -> torch.Tensor:
            self._count(macs)
            out = kernel(x)
            return out if bias is None else out.add_(bias)

        return run

    def runs_dense(self) -> bool:
        return self.budget >= FULL_BUDGET

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        shape = hidden_states.shape
        return self.rows_forward(hidden_states.reshape(-1, shape[-1])).view(shape)

    def rows_forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, D] -> [N, D]: dense at budget 1, else the fast path where it applies, else the reference."""
        if self.runs_dense():
            return self.dense_forward(x)
        out = self.fast_forward(x) if self.use_fast(x) else None
        return self.reference_forward(x) if out is None else out

    def extra_repr(self) -> str:
        return f"method={self.method}, budget={self.budget:.3f}, d_ff={self.up.shape[0]}"
