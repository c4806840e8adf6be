"""H2O (Zhang et al. 2023, "H2O: Heavy-Hitter Oracle"): a token's importance is the attention it has received,
summed over every query so far; keep the heaviest plus a recent window."""

from __future__ import annotations

import torch


def received_attention(probs: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """Attention each cached entry received from these queries, summed over queries and over the query heads that
    share its KV head (GQA): probs [B, Hq, Q, L] -> [B, Hkv, L]."""
    batch, heads, _, length = probs.shape
    return probs.float().sum(dim=2).view(batch, kv_heads, heads // kv_heads, length).sum(dim=2)
