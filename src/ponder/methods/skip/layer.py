"""Layer skip method: per token and layer, the whole decoder layer runs or the token skips it.

The decision is made at the layer's input, so it lives in the FFN module (which every executor already calls) and
reaches the layer through hooks: `decide` before the layer, the skipped tokens' inputs passed through after it.
The lean decoder (`ponder.inference.decode`) calls `decide` itself for batches; for one token a C kernel
(`native.LayerSkipKernel`) runs the gate and, for a skipped token, computes only the layer's K and V.

Why K/V stay correct: a layer's K/V for a token are a function of that token's residual at the layer's input. A
token that skips the layer keeps that residual unchanged, so the K/V the dense layer would compute from it are
exactly what later tokens must attend to. HF's forward computes them as part of the full layer; the lean decoder
computes only the K and V projections for skipped tokens (6 % of a SmolLM2 layer's weights).

Instead of the layer's update a skipped token gets a stand-in: by default a per-channel affine map of its residual
(scale ⊙ x + shift, fitted by least squares on the calibration tokens the gate skips first; 2·D numbers per
layer), which on SmolLM2 cut perplexity at half compute 2.6× against a plain skip (BENCHMARKS.md).

The budget is, as for every method, the fraction of dense FFN compute: a token that runs the layer costs the
dense FFN plus the gate, one that skips it the gate and the stand-in (D MACs). Skipping also saves the layer's
attention (all but the K/V projections); `ponder bench` times that, the compute numbers do not count it.

Shapes: N = tokens, D = hidden, G = budgets in the grid, Q = stored score quantiles.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ponder.errors import PonderError
from ponder.kernels import native
from ponder.methods.base import SparseFFN, budget_grid, quantile, scorer, scorer_macs
from ponder.methods.calibrate import fit_regressor
from ponder.methods.skip.config import SkipConfig

QUANTILES = 257
FEEDBACK_TOKENS = 1024  # calibration tokens the closed-loop threshold correction runs on
FEEDBACK_FORWARDS = 8  # at most, per calibrated budget
FEEDBACK_TOLERANCE = 0.005


def rms_normalized(x: torch.Tensor) -> torch.Tensor:
    """The residual at unit RMS: the gate sees its direction, as the layer's own input norm does."""
    return x * torch.rsqrt(x.square().mean(-1, keepdim=True) + 1e-6)


def fit_stand_in(x: torch.Tensor, update: torch.Tensor, *, affine: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) [D] each, least squares per channel: update_j ≈ scale_j · x_j + shift_j for residuals x and
    layer updates [N, D]. Without `affine`, scale is 0 and shift the mean update (MoE++'s constant expert, for a
    whole layer)."""
    x_mean, update_mean = x.mean(0), update.mean(0)
    scale = torch.zeros_like(x_mean)
    if affine:
        centred = x - x_mean
        scale = (centred * (update - update_mean)).mean(0) / centred.square().mean(0).clamp_min(1e-8)
    return scale, update_mean - scale * x_mean


def _hidden_states(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


@torch.no_grad()
def _closed_loop(
    modules: list[SkipFFN], model: nn.Module, batch: torch.Tensor, budget: float, start: float, gate_cost: float
) -> float:
    """The shared threshold at which the skipping model itself runs `budget - gate_cost` of its (token, layer)
    pairs on `batch`: a bracketed search that proposes, after each forward, the threshold at which the scores
    that forward produced would have met the target (bisecting when that leaves the bracket)."""
    target = budget - gate_cost
    low, high = -float("inf"), float("inf")  # thresholds known to run too much / too little
    threshold, best, best_error = start, start, float("inf")
    for _ in range(FEEDBACK_FORWARDS):
        for module in modules:
            module.budget, module.threshold, module.recorded = budget, torch.tensor(threshold), []
        model(batch)
        scores = torch.cat([torch.cat(module.recorded) for module in modules])
        for module in modules:
            module.recorded = None
        share = float((scores > threshold).float().mean())
        if abs(share - target) < best_error:
            best, best_error = threshold, abs(share - target)
        if best_error <= FEEDBACK_TOLERANCE:
            break
        low, high = (threshold, high) if share > target else (low, threshold)
        proposal = float(quantile(scores, torch.tensor(1 - target)))
        if not low < proposal < high:
            proposal = (low + high) / 2 if abs(low) + abs(high) < float("inf") else proposal
        threshold = proposal
    return best


class SkipFFN(SparseFFN):
    method = "skip"
    whole_layer = True
    joint_thresholds = True

    def __init__(self, *, view, activation: str, config: SkipConfig):
        super().__init__(view=view, activation=activation, budget_grid=budget_grid(config.min_budget))
        self.config = config
        self.layer_gate = scorer(view, config.rank, 1, name="layer gate", min_budget=config.min_budget)
        self.register_buffer("score_quantiles", torch.zeros(QUANTILES))  # [Q], gate scores on calibration text
        # What a skipped token gets instead of the layer's update: scale ⊙ x + shift (zeros: plain skip).
        self.register_buffer("stand_in_scale", torch.zeros(view.d_model))  # [D]
        self.register_buffer("stand_in_shift", torch.zeros(view.d_model))  # [D]
        self.skipping: torch.Tensor | None = None
        """[N] bool: the tokens that skip the layer call under way (set by `decide`, used once by the FFN call)."""
        self._pending: tuple[torch.Tensor, torch.Tensor | None] | None = None  # layer input and decision (hooks)
        self.recorded: list[torch.Tensor] | None = None  # gate scores of every decision, while calibrating

    def gate_macs(self) -> int:
        return scorer_macs(self.layer_gate)

    def stand_in_macs(self) -> int:
        return 0 if self.config.stand_in == "none" else self.stand_in_scale.numel()

    def passed_through(self, x: torch.Tensor) -> torch.Tensor:
        """The residual a skipped token leaves the layer with: x plus the stand-in update."""
        return torch.addcmul(x + self.stand_in_shift, x, self.stand_in_scale)

    # --- calibration ------------------------------------------------------------------------------------------
    def calibrate(self, inputs: torch.Tensor, outputs: torch.Tensor) -> None:
        """Fit the gate to log(‖Δx‖ / ‖x‖) of this layer on the residual stream before [N, D] and after it."""
        config = self.config
        update = (outputs - inputs).norm(dim=-1) / inputs.norm(dim=-1).clamp_min(1e-6)  # [N]
        features = rms_normalized(inputs)
        fit_regressor(
            self.layer_gate, features, update.clamp_min(1e-6).log()[:, None], steps=config.steps, lr=config.lr,
            seed=config.seed,
        )  # fmt: skip
        scores = torch.cat([self.layer_gate(chunk)[:, 0] for chunk in features.split(4096)])
        self.score_quantiles.copy_(quantile(scores, torch.linspace(0, 1, QUANTILES)))
        easy = scores <= scores.median()  # the half of the tokens that skip first
        self._fit_stand_in(inputs[easy], (outputs - inputs)[easy])

    def _fit_stand_in(self, x: torch.Tensor, update: torch.Tensor) -> None:
        if self.config.stand_in != "none":
            scale, shift = fit_stand_in(x, update, affine=self.config.stand_in == "affine")
            self.stand_in_scale.copy_(scale)
            self.stand_in_shift.copy_(shift)

    @staticmethod
    def calibrate_jointly(
        modules: list[SkipFFN], model: nn.Module, windows: torch.Tensor, *, progress: bool = False
    ) -> None:
        """One threshold per budget for all layers, so tokens skip where the predicted relative update is smallest
        in the whole model (layers that change the residual a lot, like the first, are rarely skipped).

        Open loop first: the share of (token, layer) pairs that run is read off each layer's score quantiles,
        which were measured on the dense model's residual stream. But skipping shifts later layers' inputs (a
        token that skipped arrives with a smaller, earlier residual and tends to run later layers), so the
        thresholds are then corrected in closed loop: run the skipping model on calibration windows, and move the
        threshold to where the scores it actually produced meet the budget."""
        levels = np.linspace(0, 1, QUANTILES)
        tables = [m.score_quantiles.numpy() for m in modules]
        gate_cost = sum(m.gate_macs() / m.dense_macs() for m in modules) / len(modules)

        def share_run(threshold: float) -> float:
            return float(np.mean([1 - np.interp(threshold, table, levels) for table in tables]))

        grid = modules[0].budget_grid.tolist()
        for index, budget in enumerate(grid):
            lo = min(float(t[0]) for t in tables) - 1.0  # every pair runs
            hi = max(float(t[-1]) for t in tables) + 1.0  # none runs
            for _ in range(60):
                middle = (lo + hi) / 2
                lo, hi = (middle, hi) if share_run(middle) > budget - gate_cost else (lo, middle)
            for module in modules:
                module.thresholds[index] = hi
        batch = windows.reshape(-1)[:FEEDBACK_TOKENS].view(-1, windows.shape[-1])
        budgets = tqdm(grid[:-1], desc="skip thresholds", unit="budget", disable=not progress)
        for index, budget in enumerate(budgets):  # the grid's last budget is 1: dense, no threshold used
            threshold = _closed_loop(modules, model, batch, budget, float(modules[0].thresholds[index]), gate_cost)
            for module in modules:
                module.thresholds[index] = threshold
        for module in modules:
            module.set_budget(module.budget)

    # --- the decision, at the layer's input -------------------------------------------------------------------
    def decide(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        """Which tokens of the residual [..., D] skip this layer ([N] bool), kept for the FFN call that follows;
        None at full budget (every token runs)."""
        if self.runs_dense():
            self.skipping = None
            return None
        x = hidden_states.reshape(-1, hidden_states.shape[-1])
        scores = self.layer_gate(rms_normalized(x))[:, 0]
        if self.recorded is not None:
            self.recorded.append(scores)
        self.skipping = scores <= self.threshold
        return self.skipping

    def attach(self, layer: nn.Module) -> None:
        """Hooks on the decoder layer, for every forward that runs the layer module itself (HF forward, generate):
        decide at its input; after it, skipped tokens leave with the residual they came in with."""
        layer.register_forward_pre_hook(self._before_layer, with_kwargs=True)
        layer.register_forward_hook(self._after_layer, with_kwargs=True)

    def _before_layer(self, layer: nn.Module, args: tuple, kwargs: dict) -> None:
        x = _hidden_states(args, kwargs)
        self._pending = (x, self.decide(x))

    def _after_layer(self, layer: nn.Module, args: tuple, kwargs: dict, output):
        (x, skipping), self._pending = self._pending, None
        if skipping is None:
            return None
        hidden = output[0] if isinstance(output, tuple) else output
        hidden = torch.where(skipping.view(*x.shape[:-1], 1), self.passed_through(x), hidden)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    def count_skipped_token(self, x: torch.Tensor) -> None:
        """Count a token the lean decoder skipped in C (`native.LayerSkipKernel`), as this module's own call would
        have; while a meter or trace hooks the module, through that call, so they see the token."""
        if self._forward_hooks:
            self.skipping = torch.ones(1, dtype=torch.bool)
            self(x.view(1, 1, -1))
        else:
            self._count(self.gate_macs() + self.stand_in_macs())

    # --- executors (the FFN part of a layer call) -----------------------------------------------------------
    def _skipping_for(self, x: torch.Tensor) -> torch.Tensor:
        """The decision made at this layer call's input, used once."""
        skipping, self.skipping = self.skipping, None
        if skipping is None:  # no decision (the module called on its own): every token runs
            return torch.zeros(x.shape[0], dtype=torch.bool)
        if skipping.shape != (x.shape[0],):
            raise PonderError(f"layer-skip decisions for {skipping.shape[0]} tokens, the FFN got {x.shape[0]}")
        return skipping

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        run = ~self._skipping_for(x)
        self._count(self.gate_macs() + torch.where(run, self.dense_macs(), self.stand_in_macs()))
        out = torch.zeros_like(x)  # skipped tokens: the layer passes their input (and stand-in) through instead
        rows = run.nonzero()[:, 0]
        if len(rows):
            out[rows] = self.output(self.intermediate(x[rows]))
        return out

    def fast_forward(self, x: torch.Tensor) -> torch.Tensor | None:
        if self.activation not in native.ACTIVATIONS:
            return None
        if bool(self._skipping_for(x)[0]):
            self._count(self.gate_macs() + self.stand_in_macs())
            return torch.zeros_like(x)
        self._count(self.gate_macs() + self.dense_macs())
        out = native.glu_dense(x[0], self.gate, self.up, self.down, self.activation, self.gate_bias, self.up_bias,
                               workspace=self.workspace)  # fmt: skip
        return self.finish(out[None])

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, layer skip"
