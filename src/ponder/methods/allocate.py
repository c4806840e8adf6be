"""Greedy per-layer budget allocation (TEAL's greedy idea, measured on the loss): layers that hurt the model
least when sparsified give up compute first, so a global budget b becomes per-layer budgets whose mean is b.

Works for any method: it only calls `set_budget` on single modules and rewrites each module's calibrated threshold
grid so that the model-level `set_budget(b)` puts layer l at its allocated budget. Calibration text only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from ponder.methods.base import FULL_BUDGET, SparseFFN
from ponder.train.distributed import SINGLE, World


@torch.inference_mode()
def _loss(model: PreTrainedModel, batches: torch.Tensor) -> float:
    logits = model(batches).logits[:, :-1].float()  # [W, L-1, V]
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), batches[:, 1:].flatten()).item()


def layer_sensitivity(
    model: PreTrainedModel,
    modules: list[SparseFFN],
    batches: torch.Tensor,
    levels: list[float],
    progress: bool,
    ranks: World = SINGLE,
    apply: Callable[[SparseFFN, float], None] = SparseFFN.set_budget,
) -> torch.Tensor:
    """Loss increase when only layer l runs at level levels[p] and every other layer is dense: [layers, P].
    `apply(module, level)` sets a level (by default its budget; level 1 must be the dense module).
    Under torchrun each rank measures every N-th layer and the ranks sum their tables."""
    for module in modules:
        apply(module, FULL_BUDGET)
    dense = _loss(model, batches)
    increase = torch.zeros(len(modules), len(levels))
    jobs = [  # level 1 is the dense module: its increase is 0 without a forward
        (layer, p) for layer in range(len(modules)) if ranks.owns(layer) for p in range(len(levels)) if levels[p] < 1
    ]
    for layer, p in tqdm(jobs, desc="layer sensitivity", unit="run", disable=not progress):
        apply(modules[layer], levels[p])
        increase[layer, p] = _loss(model, batches) - dense
        apply(modules[layer], FULL_BUDGET)
    return ranks.sum(increase)


def greedy_schedule(increase: torch.Tensor, levels: list[float], targets: list[float]) -> torch.Tensor:
    """Per-layer budgets [targets, layers] from loss increases [layers, P] at `levels` (descending, first = 1).

    From all layers dense, repeatedly lower by one level the layer whose loss grows least by it; a target is read
    off where the mean budget crosses it (interpolating the one layer moved in that step), so the schedule is
    monotone: a lower target never gives any layer more compute.
    """
    layers = increase.shape[0]
    position = [0] * layers
    states = [torch.full((layers,), levels[0])]
    while True:
        movable = [layer for layer in range(layers) if position[layer] + 1 < len(levels)]
        if not movable:
            break
        step_cost = [increase[layer, position[layer] + 1] - increase[layer, position[layer]] for layer in movable]
        layer = movable[int(torch.tensor(step_cost).argmin())]
        position[layer] += 1
        states.append(states[-1].clone())
        states[-1][layer] = levels[position[layer]]
    means = torch.stack(states).mean(dim=1)  # non-increasing
    schedule = torch.empty(len(targets), layers)
    for index, target in enumerate(targets):
        after = int((means > target + 1e-9).sum().clamp(max=len(states) - 1))  # first state at or below target
        before = max(after - 1, 0)
        span = float(means[before] - means[after])
        t = 0.0 if span == 0 else float(means[before] - target) / span
        schedule[index] = torch.lerp(states[before], states[after], t)
    return schedule


def allocate_greedy(
    model: PreTrainedModel,
    modules: list[SparseFFN],
    batches: torch.Tensor,
    *,
    step: float = 0.15,
    progress: bool = True,
    ranks: World = SINGLE,
) -> torch.Tensor:
    """Rewrite every module's threshold grid with the greedy schedule; returns it ([grid budgets, layers])."""
    floor = max(module.min_budget for module in modules)
    levels = [FULL_BUDGET - step * i for i in range(int((FULL_BUDGET - floor) / step + 1e-9) + 1)]
    if levels[-1] > floor + 1e-9:
        levels.append(floor)
    increase = layer_sensitivity(model, modules, batches, levels, progress, ranks)
    grid = modules[0].budget_grid.tolist()
    schedule = greedy_schedule(increase, levels, grid)
    for layer, module in enumerate(modules):
        thresholds = []
        for index in range(len(grid)):
            module.set_budget(max(float(schedule[index, layer]), module.min_budget))
            thresholds.append(module.threshold.clone())
        module.thresholds.copy_(torch.stack(thresholds))
        module.set_budget(FULL_BUDGET)
    return schedule
