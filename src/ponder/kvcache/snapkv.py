"""SnapKV (Li et al. 2024, "SnapKV: LLM Knows What You are Looking for Before Generation"): the last `window`
prompt queries already attend to what generation will need; score the prompt by their attention, pooled over
neighbouring positions so a kept token keeps its context."""

from __future__ import annotations

import torch

from ponder.kvcache.h2o import received_attention


def observation_scores(probs: torch.Tensor, kv_heads: int, *, window: int, pool: int) -> torch.Tensor:
    """probs [B, Hq, Q, L] of a prefill -> pooled scores [B, Hkv, L] from its last `window` queries."""
    scores = received_attention(probs[:, :, -window:], kv_heads)  # [B, Hkv, L]
    batch, heads, length = scores.shape
    pooled = torch.nn.functional.max_pool1d(scores.view(batch * heads, 1, length), pool, stride=1, padding=pool // 2)
    return pooled.view(batch, heads, length)
