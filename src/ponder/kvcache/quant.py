"""KIVI (Liu et al. 2024, "KIVI: A Tuning-Free Asymmetric 2bit Quantization for KV Cache"): keys have outlier
channels, so they are quantized per channel over a group of tokens; values per token. The newest `residual` tokens
stay in full precision until a whole group of older tokens can be quantized together.

The cache holds the dequantized values (what attention reads), each quantized once as its group closes;
`packed_bytes` is what the packed store (codes, plus a fp16 scale and minimum per group) would take.
Legend: B = batch, H = KV heads, L = cached entries, D = head dim.
"""

from __future__ import annotations

import torch

SCALE_BYTES = 2 * 2
"""A fp16 scale and a fp16 minimum per quantization group."""


def fake_quantize(x: torch.Tensor, mask: torch.Tensor, bits: int, dim: int) -> torch.Tensor:
    """`x` with the entries under `mask` rounded to `bits` asymmetric levels, min/max taken along `dim` over the
    masked entries only. x [B, H, L, D], mask broadcastable to x."""
    big = torch.finfo(x.dtype).max
    low = torch.where(mask, x, torch.full_like(x, big)).amin(dim=dim, keepdim=True)
    high = torch.where(mask, x, torch.full_like(x, -big)).amax(dim=dim, keepdim=True)
    levels = 2**bits - 1
    scale = ((high - low) / levels).clamp_min(1e-8)
    codes = ((x - low) / scale).round().clamp(0, levels)
    return torch.where(mask, codes * scale + low, x)


def quantize_group(keys: torch.Tensor, values: torch.Tensor, in_group: torch.Tensor, bits: int):
    """Keys per channel over the group's tokens, values per token. in_group [B, H, L] marks the group."""
    mask = in_group[..., None].expand_as(keys)  # [B, H, L, D]
    return fake_quantize(keys, mask, bits, dim=2), fake_quantize(values, mask, bits, dim=3)


def packed_bytes(quantized: int, full: int, groups: int, *, heads: int, dim: int, bits: int, full_bytes: int) -> int:
    """Bytes of one layer's K and V (per batch row): `quantized` entries as codes, `full` entries at `full_bytes`
    per number; keys carry a scale and minimum per channel per group, values per token."""
    codes = 2 * quantized * dim * bits // 8
    scales = groups * dim * SCALE_BYTES + quantized * SCALE_BYTES
    return heads * (codes + scales + 2 * full * dim * full_bytes)
