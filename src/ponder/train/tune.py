"""The end-to-end phase: train the gates of a converted model against the dense teacher's output (ACM phase III).

Per-layer calibration teaches each gate its own layer's output error; what matters is the model's output, where
layers' errors interact (session 4's oracle: routes priced one layer at a time were 30× worse than routes measured
in place). This phase runs the adaptive model with its gates' hard decisions and back-propagates through a
relaxation of them (straight-through) to minimise KL(dense ‖ adaptive) plus a budget loss, at a budget drawn per
step, so one set of gates is trained for every budget. The teacher is the same model at full budget, which is
the original model exactly, so no second copy is held. Only gate parameters train: every other weight is frozen,
so the model stays exact at budget 1.

Resumable: the step, the gates and Adam's moments are saved (safetensors) every SAVE_EVERY steps; each step's
data and budget come from a generator seeded by the step index, so a resumed run ends with the same gates.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from tqdm.auto import tqdm

from ponder.io import save_tensors_atomic

STATE_FILE = "tune.safetensors"
TUNE_LR = 1e-3
BUDGET_WEIGHT = 50.0  # weight of (achieved − target compute)² against the mean per-token KL (nats)
ROWS_PER_STEP = 2  # calibration windows per step
SAVE_EVERY = 10


def _kl(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """Mean per-token KL(teacher ‖ student) from logits [B, T, V]."""
    t, s = teacher.log_softmax(-1), student.log_softmax(-1)
    return (t.exp() * (t - s)).sum(-1).mean()


def _save_state(path: Path, step: int, gates: nn.ModuleList, optimizer: torch.optim.Optimizer) -> None:
    tensors = {f"gate.{k}": v for k, v in gates.state_dict().items()} | {"step": torch.tensor(step)}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            tensors[f"adam.{index}.{key}"] = torch.as_tensor(value)
    save_tensors_atomic(tensors, path)


def _load_state(path: Path, gates: nn.ModuleList, optimizer: torch.optim.Optimizer) -> int:
    tensors = load_file(str(path))
    gates.load_state_dict({k.removeprefix("gate."): v for k, v in tensors.items() if k.startswith("gate.")})
    saved = optimizer.state_dict()
    for key, value in tensors.items():
        if key.startswith("adam."):
            _, index, name = key.split(".")
            saved["state"].setdefault(int(index), {})[name] = value
    optimizer.load_state_dict(saved)
    return int(tensors["step"])


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
    work.mkdir(parents=True, exist_ok=True)
    gates = nn.ModuleList(m.router for m in modules)
    requires = {name: p.requires_grad for name, p in model.named_parameters()}
    model.requires_grad_(False)
    gates.requires_grad_(True)
    optimizer = torch.optim.Adam(gates.parameters(), lr=TUNE_LR)
    state = work / STATE_FILE
    start = _load_state(state, gates, optimizer) if state.exists() else 0
    router_cost = sum(m.router_macs() / m.dense_macs() for m in modules) / len(modules)
    bar = tqdm(range(start, steps), desc="tune gates", unit="step", disable=not progress)
    try:
        with torch.enable_grad():
            for step in bar:
                generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
                rows = windows[torch.randint(0, len(windows), (ROWS_PER_STEP,), generator=generator)]
                budget = budgets[int(torch.randint(0, len(budgets), (1,), generator=generator))]
                with torch.no_grad():
                    teacher = model(rows).logits  # full budget: the original model
                for module in modules:
                    module.tuning, module.tuned_compute = budget, []
                student = model(rows).logits
                for module in modules:
                    module.tuning = None  # the next teacher forward runs dense
                compute = router_cost + torch.cat([c for m in modules for c in m.tuned_compute]).mean()
                kl = _kl(teacher, student)
                loss = kl + BUDGET_WEIGHT * (compute - budget) ** 2
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                bar.set_postfix(kl=f"{kl.item():.3f}", budget=f"{budget:.2f}", compute=f"{compute.item():.2f}")
                if (step + 1) % SAVE_EVERY == 0 or step + 1 == steps:
                    _save_state(state, step + 1, gates, optimizer)
    finally:
        for module in modules:
            module.tuning, module.tuned_compute = None, []
        for name, p in model.named_parameters():
            p.requires_grad_(requires[name])
        gates.requires_grad_(False)


@torch.no_grad()
def capture_module_inputs(model: nn.Module, modules: list, windows: torch.Tensor) -> list[torch.Tensor]:
    """Each module's inputs [N, D] while the model runs `windows` at full budget (the dense residual stream)."""
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
