"""Routing policies as pure functions: which experts each token runs, given the router's scores and one knob.

Every policy has a single scalar knob whose larger values never select fewer experts, so a budget maps to a knob
by bisection on calibration scores (`calibrate_knob`) and interpolating knobs between calibrated budgets is
monotone too. Scores are the router's predicted contribution of each expert (D2DMoE: the norm of the expert's
output), so they are comparable across experts and tokens.

Shapes: N = tokens, E = experts.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ponder.errors import PonderError


def top_k(scores: torch.Tensor, k: float) -> torch.Tensor:
    """The round(k) highest-scoring experts of every token: [N, E] bool."""
    k = int(round(min(max(k, 0.0), scores.shape[1])))
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if k > 0:
        mask.scatter_(1, scores.topk(k, dim=1).indices, True)
    return mask


def top_p(scores: torch.Tensor, p: float) -> torch.Tensor:
    """Experts in descending score until their share of the token's total (positive) score reaches p; at least one
    (Huang et al., 2024, "Harder Tasks Need More Experts: Dynamic Routing in MoE Models"). p <= 0 selects none."""
    return _top_p_ordered(scores)(p)


def _top_p_ordered(scores: torch.Tensor) -> Callable[[float], torch.Tensor]:
    """top_p's selection for any p, the sort by share done once."""
    positive = scores.clamp_min(0)
    share = positive / positive.sum(1, keepdim=True).clamp_min(1e-12)  # [N, E]
    ordered, order = share.sort(dim=1, descending=True)  # [N, E]
    before = ordered.cumsum(1) - ordered  # share of the experts ranked above each one

    def select(p: float) -> torch.Tensor:
        if p <= 0:
            return torch.zeros_like(scores, dtype=torch.bool)
        keep_sorted = before < p  # the first always passes
        return torch.zeros_like(keep_sorted).scatter_(1, order, keep_sorted)

    return select


def dynamic_k(scores: torch.Tensor, knob: float) -> torch.Tensor:
    """Every expert scoring at least τ·max of its token, τ = 1 − knob (D2DMoE's dynamic-k; knob 0 keeps only the
    best, knob 1 keeps all experts with a positive score; knob <= 0 selects none)."""
    return _dynamic_k_best(scores)(knob)


def _dynamic_k_best(scores: torch.Tensor) -> Callable[[float], torch.Tensor]:
    """dynamic_k's selection for any knob, each token's best score found once."""
    best = scores.max(dim=1, keepdim=True).values  # [N, 1]
    return lambda knob: scores >= (1.0 - knob) * best if knob > 0 else torch.zeros_like(scores, dtype=torch.bool)


def threshold(scores: torch.Tensor, knob: float) -> torch.Tensor:
    """Every expert whose score exceeds −knob: one threshold for all tokens, so compute flows to the tokens with
    large predicted contributions and a token may run no expert at all. (The knob is the negated threshold so
    that, as for every policy, a larger knob selects more.)"""
    return scores > -knob


POLICIES: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "top-k": top_k,
    "top-p": top_p,
    "dynamic-k": dynamic_k,
    "threshold": threshold,
}


def check_policy(name: str) -> str:
    if name not in POLICIES:
        raise PonderError(f"unknown routing policy '{name}': choose one of {', '.join(POLICIES)}")
    return name


def route(policy: str, scores: torch.Tensor, knob: float) -> torch.Tensor:
    """The experts each token runs under `policy` at `knob`: [N, E] bool."""
    return POLICIES[check_policy(policy)](scores, knob)


def selector(policy: str, scores: torch.Tensor) -> Callable[[float], torch.Tensor]:
    """`route(policy, scores, knob)` for many knobs over the same scores, equal to it, with the work that does not
    depend on the knob done once: top-p's sort, dynamic-k's maxima, top-k's selection once per whole k. Bisection
    asks for 40 knobs per budget; redoing that work each time was half of moe's per-layer calibration (SmolLM2-135M:
    15.3 s a layer before, 6.7 s after; benchmarks/experiments/moe_calibration_profile.py)."""
    if policy == "top-p":
        return _top_p_ordered(scores)
    if policy == "top-k":
        masks: dict[int, torch.Tensor] = {}

        def select(k: float) -> torch.Tensor:
            whole = int(round(min(max(k, 0.0), scores.shape[1])))
            if whole not in masks:
                masks[whole] = top_k(scores, whole)
            return masks[whole]

        return select
    if policy == "dynamic-k":
        return _dynamic_k_best(scores)
    return lambda knob: route(policy, scores, knob)


def knob_range(policy: str, scores: torch.Tensor) -> tuple[float, float]:
    """Knob values at which the policy selects (nearly) nothing and everything."""
    if policy == "top-k":
        return 0.0, float(scores.shape[1])
    if policy == "threshold":
        return -float(scores.max()) - 1.0, -float(scores.min()) + 1.0
    return 0.0, 1.0


def calibrate_knob(
    policy: str,
    scores: torch.Tensor,
    target: float,
    *,
    cost: Callable[[torch.Tensor], float] | None = None,
    steps: int = 40,
) -> float:
    """The knob at which the mean cost of the selection over `scores` [N, E] is `target` (or just below).

    `cost` maps a selection [N, E] to its mean cost; by default the fraction of experts selected. Bisection on a
    monotone function; top-k with the default cost is solved directly (every token runs k / E of the experts).
    """
    if policy == "top-k" and cost is None:
        return min(max(target, 0.0), 1.0) * scores.shape[1]
    cost = cost or (lambda mask: float(mask.float().mean()))
    low, high = knob_range(policy, scores)
    select = selector(policy, scores)
    for _ in range(steps):
        middle = (low + high) / 2
        if cost(select(middle)) > target:
            high = middle
        else:
            low = middle
    return low
