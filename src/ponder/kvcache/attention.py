"""The hook that lets a cache see attention: an attention function registered with transformers'
`AttentionInterface` under `NAME`.

A `Cache.update` receives keys and values but never the queries, so scores (H2O, SnapKV, D2O) cannot be computed
inside the cache without recomputing every query. The attention function sees queries, keys and the mask; the cache
marks which layer it just updated (`PENDING`), and the attention function hands that layer its probabilities, then
the cache evicts. With no compressed cache pending it is plain SDPA, so a model left on this implementation runs as
before. Legend: B = batch, Hq = query heads, Hkv = KV heads, Q = queries, L = cached entries, D = head dim.
"""

from __future__ import annotations

from contextvars import ContextVar

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, eager_mask

NAME = "ponder_kv"
PENDING: ContextVar[tuple | None] = ContextVar("ponder_kv_pending", default=None)
"""(cache, layer index) of the update whose attention has not run yet."""


def kv_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """SDPA, or eager attention whose probabilities go to the pending cache when its policy scores tokens."""
    pending = PENDING.get()
    if pending is not None and attention_mask is not None:
        attention_mask = fit_mask(attention_mask, key.shape[-2])
    if pending is None or not pending[0].needs_attention:
        out = sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling)
        if pending is not None:
            PENDING.set(None)
            pending[0].observe(pending[1], None)
        return out
    PENDING.set(None)
    cache, layer_idx = pending
    groups = query.shape[1] // key.shape[1]
    key = key.repeat_interleave(groups, dim=1)  # [B, Hq, L, D]
    value = value.repeat_interleave(groups, dim=1)
    scores = query @ key.mT * (scaling if scaling is not None else query.shape[-1] ** -0.5)  # [B, Hq, Q, L]
    if attention_mask is not None:
        scores = scores + attention_mask  # eager masks are additive (0 or -inf)
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)  # fp32 softmax, as HF's eager
    out = (probs @ value).transpose(1, 2).contiguous()  # [B, Q, Hq, D]
    cache.observe(layer_idx, probs)
    return out, probs


def fit_mask(mask: torch.Tensor, length: int) -> torch.Tensor:
    """The mask [B, 1, Q, *] for a layer holding `length` entries. Masks are sized from the first layer, and D2O
    gives layers different lengths: every kept entry is in the past of every new token (visible), and the new
    tokens are the last Q entries, causal among themselves as the mask's last Q columns say."""
    if mask.shape[-1] == length:
        return mask
    new = mask.shape[-2]
    visible = torch.zeros(*mask.shape[:-1], length - new, dtype=mask.dtype, device=mask.device)
    return torch.cat([visible, mask[..., -new:]], dim=-1)


def install(model) -> None:
    """Register the hook once and switch `model` to it (masks as eager attention expects them: additive floats)."""
    if NAME not in AttentionInterface._global_mapping:
        AttentionInterface.register(NAME, kv_attention)
        AttentionMaskInterface.register(NAME, eager_mask)
    if model.config._attn_implementation != NAME:
        model.set_attn_implementation(NAME)
