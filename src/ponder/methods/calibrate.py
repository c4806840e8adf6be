"""Fit the small per-layer networks methods train (predictors, routers) on captured FFN inputs."""

from __future__ import annotations

import torch


def fit_regressor(
    net: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, steps: int, lr: float, seed: int
) -> None:
    """Train a small per-layer network (predictor, router) to regress `targets` [N, K] from `inputs` [N, D] with
    Adam on random batches of 512; seeded, so a rerun gives the same weights. The net is frozen afterwards."""
    generator = torch.Generator().manual_seed(seed)
    net.requires_grad_(True)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            batch = torch.randint(0, inputs.shape[0], (512,), generator=generator)
            loss = torch.nn.functional.mse_loss(net(inputs[batch]), targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    net.requires_grad_(False)
