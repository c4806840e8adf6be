"""Cut an FFN's neurons into experts: shared experts plus balanced clusters, as one permutation of the neurons.

MoEfication (Zhang et al., 2022) clusters neurons by their weights or by co-activation; CMoE (Pei et al., 2025)
adds *shared* experts made of the neurons that matter for almost every token. Experts here are equal-sized blocks
of a permutation of the dense neurons: with every expert on, the converted FFN is the dense FFN.

Shapes: N = calibration tokens, F = neurons, D = hidden size, E = routed experts, S = neurons per expert.
"""

from __future__ import annotations

import torch
from torch import nn

CLUSTERINGS = ("activations", "weights")


def balanced_assign(similarity: torch.Tensor, capacity: int) -> torch.Tensor:
    """Assign each row of `similarity` [F, E] to a column, at most `capacity` rows per column, greedily by
    similarity: in rounds, every unassigned row proposes to its best column that still has room, and each column
    takes its best proposals. Returns the column of every row: [F]."""
    F, E = similarity.shape
    if capacity * E < F:
        raise ValueError(f"{E} clusters of {capacity} cannot hold {F} rows")
    assign = torch.full((F,), -1, dtype=torch.long)
    room = torch.full((E,), capacity, dtype=torch.long)
    while (open_rows := (assign < 0).nonzero().squeeze(1)).numel():
        scores = similarity[open_rows].masked_fill(room[None] == 0, -torch.inf)  # [f, E]
        best = scores.argmax(1)  # [f]
        order = scores.gather(1, best[:, None]).squeeze(1).argsort(descending=True, stable=True)
        rows, columns = open_rows[order], best[order]  # proposals, best first
        by_column, perm = columns.sort(stable=True)
        starts = torch.cumsum(torch.bincount(by_column, minlength=E), 0) - torch.bincount(by_column, minlength=E)
        rank = torch.empty_like(columns)
        rank[perm] = torch.arange(len(columns)) - starts[by_column]  # place of each proposal within its column
        accepted = rank < room[columns]
        assign[rows[accepted]] = columns[accepted]
        room -= torch.bincount(columns[accepted], minlength=E)
    return assign


def balanced_kmeans(features: torch.Tensor, clusters: int, *, iterations: int = 15, seed: int = 0) -> torch.Tensor:
    """Spherical k-means of the rows of `features` [F, K] into `clusters` clusters of equal size: [F] labels."""
    F = features.shape[0]
    if F % clusters:
        raise ValueError(f"{clusters} clusters do not divide {F} rows")
    points = nn.functional.normalize(features.float(), dim=1)
    generator = torch.Generator().manual_seed(seed)
    centroids = points[torch.randperm(F, generator=generator)[:clusters]]  # [E, K]
    labels = torch.zeros(F, dtype=torch.long)
    for _ in range(iterations):
        labels = balanced_assign(points @ centroids.T, F // clusters)
        sums = torch.zeros_like(centroids).index_add_(0, labels, points)
        centroids = nn.functional.normalize(sums, dim=1)
    return labels


def contributions(h: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """|h_i| · ‖down[:, i]‖: how much neuron i moves each token's output, [N, F] (h [N, F], down [D, F])."""
    return h.abs() * down.norm(dim=0)


def expert_order(
    h: torch.Tensor,
    down: torch.Tensor,
    weights: torch.Tensor,
    *,
    experts: int,
    shared: int,
    clustering: str = "activations",
    sample: int = 2048,
    seed: int = 0,
) -> torch.Tensor:
    """A permutation of the F neurons: `shared` shared experts first (the neurons with the largest mean
    contribution), then the remaining neurons clustered into experts − shared blocks of F / experts.

    h: calibration activations [N, F]; down: [D, F]; weights: per-neuron input weights [F, K] (gate and up rows),
    the features of the "weights" clustering. The "activations" clustering groups neurons that contribute to the
    same tokens (MoEfication's co-activation), on the contributions of the first `sample` tokens.
    """
    F = h.shape[1]
    if F % experts:
        raise ValueError(f"{experts} experts do not divide the FFN width {F}")
    if clustering not in CLUSTERINGS:
        raise ValueError(f"clustering must be one of {', '.join(CLUSTERINGS)}, got '{clustering}'")
    size = F // experts
    contribution = contributions(h, down)  # [N, F]
    by_importance = contribution.mean(0).argsort(descending=True, stable=True)
    shared_neurons, rest = by_importance[: shared * size], by_importance[shared * size :].sort().values
    routed = experts - shared
    if routed == 0:
        return shared_neurons
    features = contribution[:sample, rest].T if clustering == "activations" else weights[rest]  # [F_rest, K]
    labels = balanced_kmeans(features, routed, seed=seed)
    clustered = rest[labels.argsort(stable=True)]  # expert 0's neurons, then expert 1's, ...
    return torch.cat([shared_neurons, clustered])
