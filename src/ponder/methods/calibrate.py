"""Fit the small per-layer networks methods train (predictors, routers) on captured FFN inputs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ponder.methods.base import MethodConfig


@dataclass
class GateConfig(MethodConfig):
    """Options of a small per-layer network that scores choices from a layer's or FFN's input (`nested`, `skip`,
    `predictor`): its size, its fit and the lowest budget calibrated."""

    rank: int = 64
    """Hidden width of the gate (at most d_model / 8)."""
    steps: int = 600
    """Adam steps per layer for the gate."""
    lr: float = 3e-3
    seed: int = 0
    min_budget: float = 0.1
    """Lowest budget calibrated (must exceed the gate's own cost, about 0.015 of the FFN for SmolLM2-135M)."""

    def __post_init__(self) -> None:
        if self.rank < 1 or self.steps < 1:
            raise ValueError("rank and steps must be positive")
        if not 0.0 < self.min_budget < 1.0:
            raise ValueError(f"min_budget must be in (0, 1), got {self.min_budget}")


def train_small(
    net: torch.nn.Module, batch_loss: Callable[[torch.Generator], torch.Tensor], *, steps: int, lr: float, seed: int
) -> None:
    """Adam on a small per-layer network for `steps` steps of `batch_loss(generator)` (which draws its own batch);
    seeded, so a rerun gives the same weights. The net is frozen afterwards."""
    generator = torch.Generator().manual_seed(seed)
    net.requires_grad_(True)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            loss = batch_loss(generator)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    net.requires_grad_(False)


def fit_regressor(
    net: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, steps: int, lr: float, seed: int
) -> None:
    """Train a small per-layer network (predictor, router) to regress `targets` [N, K] from `inputs` [N, D] on
    random batches of 512."""

    def batch_loss(generator: torch.Generator) -> torch.Tensor:
        batch = torch.randint(0, inputs.shape[0], (512,), generator=generator)
        return torch.nn.functional.mse_loss(net(inputs[batch]), targets[batch])

    train_small(net, batch_loss, steps=steps, lr=lr, seed=seed)
