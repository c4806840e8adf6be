"""D2O (Wan et al. 2024, "D2O: Dynamic Discriminative Operations for Efficient Generative Inference of LLMs"):
layers whose attention is spread wide get more of the budget than layers that attend to a few tokens, and an
evicted entry is merged into its most similar kept entry instead of being dropped.

Legend: B = batch, H = KV heads, L = cached entries, K = kept, E = evicted, D = head dim, Q = queries.
"""

from __future__ import annotations

import math

import torch


def attention_density(probs: torch.Tensor, *, window: int) -> float:
    """How spread the last `window` queries' attention is: mean entropy over log(keys seen), in [0, 1].
    A layer near 1 attends everywhere (eviction hurts it); near 0 it attends to a few tokens."""
    rows = probs[:, :, -window:].detach().float()  # [B, Hq, W, L]
    visible = torch.arange(1, rows.shape[-1] + 1, device=rows.device)[-rows.shape[2] :]  # keys each row may see
    entropy = -(rows * rows.clamp_min(1e-12).log()).sum(-1)  # [B, Hq, W]
    return float((entropy / visible.clamp_min(2).log()).mean())


def layer_shares(densities: list[float]) -> list[float]:
    """Each layer's budget relative to the uniform one, proportional to its density, mean 1 before clipping
    to at most the whole cache by the caller (so the total never exceeds the uniform budget)."""
    mean = sum(densities) / len(densities)
    if mean <= 0 or not all(math.isfinite(d) for d in densities):
        return [1.0] * len(densities)
    return [d / mean for d in densities]


def merge_evicted(
    keys: torch.Tensor,
    values: torch.Tensor,
    mass: torch.Tensor,
    keep: torch.Tensor,
    evict: torch.Tensor,
    *,
    threshold: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The kept entries with each evicted one folded into its nearest kept entry (cosine similarity of keys at
    least `threshold`): a mass-weighted mean, so every merged key and value is a convex combination of originals.
    keys, values [B, H, L, D]; mass [B, H, L] (original tokens each entry stands for); keep [B, H, K] and
    evict [B, H, E] index L. Returns kept keys, values [B, H, K, D] and mass [B, H, K]."""
    dim = keys.shape[-1]
    kept_k = keys.gather(2, keep[..., None].expand(-1, -1, -1, dim))  # [B, H, K, D]
    kept_v = values.gather(2, keep[..., None].expand(-1, -1, -1, dim))
    kept_m = mass.gather(2, keep)  # [B, H, K]
    if evict.shape[-1] == 0:
        return kept_k, kept_v, kept_m
    gone_k = keys.gather(2, evict[..., None].expand(-1, -1, -1, dim))  # [B, H, E, D]
    gone_v = values.gather(2, evict[..., None].expand(-1, -1, -1, dim))
    gone_m = mass.gather(2, evict)  # [B, H, E]
    similarity = torch.nn.functional.normalize(gone_k, dim=-1) @ torch.nn.functional.normalize(kept_k, dim=-1).mT
    best, nearest = similarity.max(dim=-1)  # [B, H, E]: the most similar kept entry of each evicted one
    weight = torch.where(best >= threshold, gone_m, torch.zeros_like(gone_m))  # dropped entries weigh nothing
    total = kept_m.scatter_add(2, nearest, weight)  # [B, H, K]
    index = nearest[..., None].expand(-1, -1, -1, dim)  # [B, H, E, D]
    merged_k = (kept_k * kept_m[..., None]).scatter_add(2, index, gone_k * weight[..., None]) / total[..., None]
    merged_v = (kept_v * kept_m[..., None]).scatter_add(2, index, gone_v * weight[..., None]) / total[..., None]
    return merged_k.to(keys.dtype), merged_v.to(values.dtype), total
