"""The end-to-end phase: train parts of a converted model against the dense teacher's output, with the adaptive
model's own decisions in the loop (ACM phase III).

Per-layer calibration teaches each part its own layer's output error; what matters is the model's output, where
layers' errors interact (the oracle: routes priced one layer at a time were 30× worse than routes measured
in place). Each step draws calibration windows and a budget, runs the dense teacher (the same model at full budget,
which is the original model exactly, so no second copy is held) and the adaptive model at that budget, and
minimises KL(dense ‖ adaptive). Two uses:

- `tune_gates` (nested): only the gates train, through a straight-through relaxation of their hard decisions, with
  a budget loss; every weight is frozen.
- `tune_experts` (moe): the experts' weights train under the router's hard decisions. They are the permuted copies
  that budgets below 1 run; budget 1 runs the original weights, so the model stays exact there.

Resumable: the step, the trained tensors and Adam's moments are saved (safetensors) every SAVE_EVERY steps; each
step's data and budget come from a generator seeded by the step index, so a resumed run ends with the same tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from tqdm.auto import tqdm

from ponder.io import save_tensors_atomic
from ponder.train.allocator import keep_freed_memory
from ponder.train.head_kl import head_kl, logits_kl

STATE_FILE = "tune.safetensors"
TUNE_LR = 1e-3  # the gates'
BUDGET_WEIGHT = 50.0  # weight of (achieved − target compute)² against the mean per-token KL (nats)
ROWS_PER_STEP = 2  # calibration windows per step
SAVE_EVERY = 10

Objective = Callable[[torch.Tensor, float], tuple[torch.Tensor, dict[str, float]]]
"""(windows [B, T], budget) -> (loss, numbers for the progress bar)."""


def budgets_between(grid: torch.Tensor, low: float, high: float = 1.0) -> list[float]:
    """The budgets of a module's calibrated `grid` in [low, high] that the end-to-end phase may draw (never 1:
    budget 1 runs the original model, the teacher)."""
    return [b for b in grid.tolist() if low - 1e-6 <= b <= high + 1e-6 and b < 1.0]


Outputs = Callable[[torch.Tensor], torch.Tensor]
Divergence = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def _comparison(model: nn.Module, rows: torch.Tensor) -> tuple[Outputs, Divergence]:
    """What the phase takes from each forward and how it compares teacher and student: the final hidden states
    through `head_kl` where the logits are a linear head of them (checked on a few tokens of `rows`, model at full
    budget), else the whole logits through `logits_kl`."""
    head, base = model.get_output_embeddings(), getattr(model, "base_model", None)
    if isinstance(head, nn.Linear) and base is not None and base is not model:
        probe = rows[:1, :8]
        logits = model(probe).logits
        if torch.allclose(head(base(probe).last_hidden_state), logits, rtol=1e-4, atol=1e-4):
            return (lambda x: base(x).last_hidden_state), partial(head_kl, head=head)
    return (lambda x: model(x).logits), logits_kl


def _save_state(path: Path, step: int, named: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer) -> None:
    tensors = {f"param.{k}": v.detach() for k, v in named.items()} | {"step": torch.tensor(step)}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            tensors[f"adam.{index}.{key}"] = torch.as_tensor(value)
    save_tensors_atomic(tensors, path)


@torch.no_grad()
def _load_state(path: Path, named: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer) -> int:
    tensors = load_file(str(path))
    for key, tensor in named.items():
        tensor.copy_(tensors[f"param.{key}"])
    saved = optimizer.state_dict()
    for key, value in tensors.items():
        if key.startswith("adam."):
            _, index, name = key.split(".")
            saved["state"].setdefault(int(index), {})[name] = value
    optimizer.load_state_dict(saved)
    return int(tensors["step"])


def _train(
    model: nn.Module,
    named: dict[str, torch.Tensor],
    objective: Objective,
    windows: torch.Tensor,
    budgets: list[float],
    *,
    steps: int,
    seed: int,
    lr: float,
    work: Path,
    desc: str,
    progress: bool,
    decay: float = 0.0,
    precision: str = "float32",
    lrs: dict[str, float] | None = None,
) -> None:
    """Adam on the tensors `named` (everything else frozen) for `steps` steps of `objective`, resumable in `work`.
    Learning rate `lr`, or `lrs[name]` for the tensors named there; every rate falls linearly to 0 over the last
    `decay` share of the steps (a function of the step index, so a resumed run follows the same schedule).
    `precision` 'bfloat16' runs the objective under autocast."""
    keep_freed_memory()
    device = next(iter(named.values())).device.type
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bfloat16")
    decay_steps = decay * steps
    work.mkdir(parents=True, exist_ok=True)
    requires = {name: p.requires_grad for name, p in model.named_parameters()}
    model.requires_grad_(False)
    for tensor in named.values():
        tensor.requires_grad_(True)
    rates = {name: (lrs or {}).get(name, lr) for name in named}
    groups = [
        {"params": [named[n] for n in named if rates[n] == rate], "lr": rate} for rate in dict.fromkeys(rates.values())
    ]
    optimizer = torch.optim.Adam(groups)
    for group in optimizer.param_groups:
        group["base_lr"] = group["lr"]
    state = work / STATE_FILE
    start = _load_state(state, named, optimizer) if state.exists() else 0
    bar = tqdm(range(start, steps), desc=desc, unit="step", disable=not progress)
    try:
        with torch.enable_grad():
            for step in bar:
                generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
                rows = windows[torch.randint(0, len(windows), (ROWS_PER_STEP,), generator=generator)]
                budget = budgets[int(torch.randint(0, len(budgets), (1,), generator=generator))]
                with autocast:
                    loss, shown = objective(rows, budget)
                for group in optimizer.param_groups:
                    group["lr"] = group["base_lr"] * (min(1.0, (steps - step) / decay_steps) if decay_steps else 1.0)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                bar.set_postfix({k: f"{v:.3f}" for k, v in shown.items()})
                if (step + 1) % SAVE_EVERY == 0 or step + 1 == steps:
                    _save_state(state, step + 1, named, optimizer)
    finally:
        for tensor in named.values():
            tensor.requires_grad_(False)
        for name, p in model.named_parameters():
            p.requires_grad_(requires[name])


def tune_gates(
    model: nn.Module,
    modules: list,
    windows: torch.Tensor,
    budgets: list[float],
    *,
    steps: int,
    seed: int,
    work: Path,
    progress: bool = False,
) -> None:
    """Train `modules[i].router` end to end for `steps` steps on calibration `windows` [W, T]. Each module offers
    `tuning` (the budget input of a relaxed forward when set, None otherwise), `tuned_compute` (what the relaxed
    forwards cost, per token, as a fraction of the FFN, gradient attached) and `router_macs`/`dense_macs`."""
    named = {f"{i}.{k}": p for i, m in enumerate(modules) for k, p in m.router.named_parameters()}
    router_cost = sum(m.router_macs() / m.dense_macs() for m in modules) / len(modules)
    outputs, divergence = _comparison(model, windows)

    def objective(rows: torch.Tensor, budget: float) -> tuple[torch.Tensor, dict[str, float]]:
        with torch.no_grad():
            teacher = outputs(rows)  # full budget: the original model
        for module in modules:
            module.tuning, module.tuned_compute = budget, []
        student = outputs(rows)
        for module in modules:
            module.tuning = None  # the next teacher forward runs dense
        compute = router_cost + torch.cat([c for m in modules for c in m.tuned_compute]).mean()
        kl = divergence(teacher, student)
        shown = {"kl": kl.item(), "budget": budget, "compute": compute.item()}
        return kl + BUDGET_WEIGHT * (compute - budget) ** 2, shown

    try:
        _train(model, named, objective, windows, budgets, steps=steps, seed=seed, lr=TUNE_LR, work=work,
               desc="tune gates", progress=progress)  # fmt: skip
    finally:
        for module in modules:
            module.tuning, module.tuned_compute = None, []


def tune_experts(
    model: nn.Module,
    modules: list,
    windows: torch.Tensor,
    budgets: list[float],
    *,
    steps: int,
    seed: int,
    lr: float,
    work: Path,
    decay: float = 0.0,
    precision: str = "float32",
    router_lr: float = 0.0,
    progress: bool = False,
) -> None:
    """Train every module's `tunable()` tensors (what its budgets below 1 run) end to end for `steps` steps on
    calibration `windows` [W, T], the model at a budget drawn from `budgets` per step; the teacher is every module
    at budget 1. Budgets are set on the modules as they were before.
    `router_lr` > 0 trains each module's `router` too, at that rate, through its relaxed forward (`relaxed`: a
    list each student forward appends its share of experts run to), with a budget loss that holds every layer's
    share at what `expert_fraction` says the step's budget pays for."""
    named = {f"{i}.{k}": t for i, m in enumerate(modules) for k, t in m.tunable().items()}
    routers = {f"{i}.router.{k}": p for i, m in enumerate(modules) for k, p in m.router.named_parameters()}
    if router_lr:
        named |= routers
    before = [m.budget for m in modules]
    for module in modules:
        module.set_budget(1.0)
    outputs, divergence = _comparison(model, windows)

    def objective(rows: torch.Tensor, budget: float) -> tuple[torch.Tensor, dict[str, float]]:
        for module in modules:
            module.set_budget(1.0)
        with torch.no_grad():
            teacher = outputs(rows)
        for module in modules:
            module.set_budget(budget)
            module.relaxed = [] if router_lr else None
        kl = divergence(teacher, outputs(rows))
        if not router_lr:
            return kl, {"kl": kl.item(), "budget": budget}
        share = torch.stack([torch.stack(m.relaxed).mean() for m in modules])
        target = torch.stack([m.expert_fraction(torch.tensor(budget)) for m in modules]).to(share.dtype)
        for module in modules:
            module.relaxed = None  # the next teacher forward runs dense
        off = BUDGET_WEIGHT * ((share - target) ** 2).mean()
        return kl + off, {"kl": kl.item(), "budget": budget, "share": share.mean().item()}

    try:
        _train(model, named, objective, windows, budgets, steps=steps, seed=seed, lr=lr, work=work,
               desc="tune experts", progress=progress, decay=decay, precision=precision,
               lrs=dict.fromkeys(routers, router_lr))  # fmt: skip
    finally:
        for module, budget in zip(modules, before, strict=True):
            module.relaxed = None
            module.set_budget(budget)


def inputs_at_each_budget(
    model: nn.Module,
    modules: list,
    windows: torch.Tensor,
    set_budget: Callable[[object, int, float], None],
    *,
    rounds: int = 1,
    desc: str,
    progress: bool = False,
) -> Iterator[tuple[int, list[torch.Tensor]]]:
    """The closed loops' walk over the budget grid below 1: per grid budget, `rounds` times, every module set to it
    (`set_budget(module, index, budget)`), then (index, each module's inputs while the model runs `windows`). The
    caller recalibrates from those inputs before the next round."""
    grid = modules[0].budget_grid.tolist()
    for index, budget in enumerate(tqdm(grid[:-1], desc=desc, unit="budget", disable=not progress)):
        for _ in range(rounds):
            for module in modules:
                set_budget(module, index, budget)
            yield index, capture_module_inputs(model, modules, windows)


@torch.no_grad()
def capture_module_inputs(model: nn.Module, modules: list, windows: torch.Tensor) -> list[torch.Tensor]:
    """Each module's inputs [N, D] while the model runs `windows` at the modules' current budgets (at budget 1, the
    dense residual stream)."""
    captured: list[list[torch.Tensor]] = [[] for _ in modules]
    hooks = [
        m.register_forward_pre_hook(lambda _, args, i=i: captured[i].append(args[0].reshape(-1, args[0].shape[-1])))
        for i, m in enumerate(modules)
    ]
    try:
        for row in windows:
            model(row[None])
    finally:
        for hook in hooks:
            hook.remove()
    return [torch.cat(parts) for parts in captured]
