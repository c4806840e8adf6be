"""StreamingLLM (Xiao et al. 2023, "Efficient Streaming Language Models with Attention Sinks"): keep the first
`sinks` tokens and the most recent ones; the baseline every score-based policy must beat."""

from __future__ import annotations

import torch

SINK = 3e9
RECENT = 2e9
"""Priority tiers above any score: sinks first, then the protected recent tokens (ordered by position)."""


def protect(priority: torch.Tensor, positions: torch.Tensor, *, sinks: int, recent: int, seen: int) -> torch.Tensor:
    """`priority` [B, H, L] with the sinks and the last `recent` positions lifted above every score (in float64:
    float32 cannot tell positions apart near the tiers)."""
    priority = priority.double()
    lifted = torch.where(positions >= seen - recent, RECENT + positions.double(), priority)
    return torch.where(positions < sinks, torch.full_like(priority, SINK), lifted)


def window_priority(positions: torch.Tensor, *, sinks: int, seen: int) -> torch.Tensor:
    """Recency is the whole priority: the kept set is the sinks plus the newest tokens."""
    return protect(positions.double(), positions, sinks=sinks, recent=seen, seen=seen)
