"""A gate that takes the budget as an input: one network serves every budget at run time.

The error-predicting routers elsewhere (nested's default) learn one quantity per choice and leave the budget to a
threshold. This gate is told the budget instead: for a token x and a budget input u it outputs, per learner j, a
logit for "this token needs learner j at this budget". It is trained on pseudo-labels of the oracle rule (run the
shortest prefix whose *true* output error is below the layer's error level for budget b, ACM's smallest sufficient
k), at budgets drawn across the calibrated grid. A network is only approximately calibrated, so a controller then
maps each target budget of the grid to the input u at which the gate's mean compute on calibration tokens meets it
(stored where other methods store thresholds; `set_budget` interpolates it), on the dense model's FFN inputs here
and then on the adaptive model's own (`NestedFFN.control_in_closed_loop`).

Shapes: N = tokens, D = hidden, L = choices (learners), R = hidden width of the gate, G = budgets in the grid.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ponder.methods.calibrate import train_small

BUDGET_FEATURES = 2  # u and log u
CONTROL_STEPS = 24  # bisection steps per budget of the grid
INPUT_RANGE = (0.02, 1.5)  # budget inputs the controller searches
GATES = ("monotone", "film")


def _budget_column(budget: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """The budget input as a column [N, 1] for tokens x [N, D] (one value, or one per token)."""
    return torch.as_tensor(budget, dtype=x.dtype).reshape(-1, 1).expand(x.shape[0], 1)


class BudgetGate(nn.Module):
    """A gate from (x [N, D], budget input u) to [N, L] logits, one per learner."""

    def needed(self, x: torch.Tensor, budget: torch.Tensor | float) -> torch.Tensor:
        """Learners each token runs at budget input u: [N] (a prefix: learner j runs only if every earlier one
        does)."""
        return (self(x, budget).cummin(dim=1).values > 0).sum(1)


class MonotoneBudgetGate(BudgetGate):
    """Linear-SiLU-Linear from x [N, D] to [N, L] logits that rise with the budget input u: logit_j = a_j(x) +
    s_j(x) log u with s_j(x) = softplus(.) >= 0, both from the same hidden units. Every logit is non-decreasing in u,
    so a token never runs fewer learners at a higher budget (the FiLM gate it replaced could:
    tests/test_nested.py); the slopes depend on the token, so the budget still changes which tokens need which
    learners, not only a global offset."""

    def __init__(self, d_model: int, rank: int, outputs: int, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.hidden = nn.Linear(d_model, rank, dtype=dtype)
        self.out = nn.Linear(rank, 2 * outputs, dtype=dtype)  # the offsets a_j, then the slopes' pre-activations
        with torch.no_grad():  # slopes start at 1 (softplus(0.5413) = 1): every learner responds to the budget
            self.out.bias[outputs:] = 0.5413
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor, budget: torch.Tensor | float) -> torch.Tensor:
        offset, slope = self.out(nn.functional.silu(self.hidden(x))).chunk(2, dim=1)  # [N, L] each
        return offset + nn.functional.softplus(slope) * _budget_column(budget, x).clamp_min(1e-3).log()


class FilmBudgetGate(BudgetGate):
    """The gate of models converted before the monotone gate (`budget_gate=film`): its hidden units are scaled and
    shifted by the budget (FiLM). Nothing makes it monotone in u: on a test model a lower budget counted more.
    Kept so those models load and run as they were converted."""

    def __init__(self, d_model: int, rank: int, outputs: int, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.hidden = nn.Linear(d_model, rank, dtype=dtype)
        self.film = nn.Linear(BUDGET_FEATURES, 2 * rank, dtype=dtype)
        self.out = nn.Linear(rank, outputs, dtype=dtype)
        with torch.no_grad():  # start as a budget-blind gate; training learns the modulation
            self.film.weight.zero_()
            self.film.bias.zero_()
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor, budget: torch.Tensor | float) -> torch.Tensor:
        u = _budget_column(budget, x)
        scale, shift = self.film(torch.cat([u, u.clamp_min(1e-3).log()], dim=1)).chunk(2, dim=1)  # [N, R] each
        return self.out(nn.functional.silu(self.hidden(x) * (1 + scale) + shift))


def make_budget_gate(
    kind: str, d_model: int, rank: int, outputs: int, dtype: torch.dtype = torch.float32
) -> BudgetGate:
    """A gate of `kind` (one of GATES)."""
    return {"monotone": MonotoneBudgetGate, "film": FilmBudgetGate}[kind](d_model, rank, outputs, dtype)


def error_levels(errors: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per target mean prefix length ([G], in learners), the error level at which running the shortest prefix
    whose error is at most that level gives it on these tokens; `errors` [N, L] are non-increasing in L."""
    low = torch.full_like(targets, float(errors.min()) - 1.0)  # every prefix too poor: all learners run
    high = torch.full_like(targets, float(errors.max()) + 1.0)  # every prefix good enough: none runs
    for _ in range(50):
        middle = (low + high) / 2
        runs_more = (errors[None] > middle[:, None, None]).sum(2).float().mean(1) > targets  # [G]
        low, high = torch.where(runs_more, middle, low), torch.where(runs_more, high, middle)
    return high


def fit_budget_gate(
    gate: BudgetGate,
    inputs: torch.Tensor,
    errors: torch.Tensor,
    budgets: torch.Tensor,
    targets: torch.Tensor,
    *,
    steps: int,
    lr: float,
    seed: int,
) -> None:
    """Train `gate` on tokens `inputs` [N, D] with true log prefix errors `errors` [N, L] (non-increasing): at a
    budget b of `budgets` [G], learner j is needed by a token whose prefix of j learners errs above the level that
    gives the mean length `targets` [G]. Budgets are drawn per example."""
    levels = error_levels(errors, targets)  # [G]

    def batch_loss(generator: torch.Generator) -> torch.Tensor:
        tokens = torch.randint(0, inputs.shape[0], (512,), generator=generator)
        drawn = torch.randint(0, len(budgets), (512,), generator=generator)
        labels = (errors[tokens] > levels[drawn, None]).to(inputs.dtype)  # [512, L]
        return nn.functional.binary_cross_entropy_with_logits(gate(inputs[tokens], budgets[drawn]), labels)

    train_small(gate, batch_loss, steps=steps, lr=lr, seed=seed)


@torch.no_grad()
def control_inputs(compute_at: Callable[[float], float], budgets: list[float]) -> list[float]:
    """The controller: per target budget, the budget input at which `compute_at(u)` (the mean compute the gate
    gives on calibration tokens, rising with u) meets it, by bisection within INPUT_RANGE; made non-decreasing
    across the budgets so a lower budget never gets a larger input."""
    inputs = []
    for budget in budgets:
        low, high = INPUT_RANGE
        for _ in range(CONTROL_STEPS):
            middle = (low + high) / 2
            low, high = (middle, high) if compute_at(middle) < budget else (low, middle)
        inputs.append(max(high, inputs[-1]) if inputs else high)
    return inputs
