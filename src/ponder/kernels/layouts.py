"""Weight layouts the kernels read that nn.Linear's [out, in] is not: built once per module at conversion or load,
then passed to the kernels as they are. The constants are sparse_ffn.c's (tests/test_kernels.py holds them equal).

Shapes: F = neurons, D = hidden, P = projections before the activation (2 for GLU: gate and up; else 1).
"""

from __future__ import annotations

import torch

TEAL_BLOCK = 16
"""Neurons per block of `teal_ffn`'s input-major layout."""

GROUP_WIDTH = 192
"""The widest panel `moe_grouped` takes (gate and up columns of one expert, padded)."""


def teal_layout(gate: torch.Tensor | None, up: torch.Tensor) -> torch.Tensor:
    """gate/up [F, D] as the input-major [D, P·Fp] layout `teal_ffn` reads: per row, blocks of TEAL_BLOCK gate then
    TEAL_BLOCK up weights of the same neurons, F zero-padded to Fp, a multiple of TEAL_BLOCK. A kept input then reads
    one contiguous row, and a thread's range of neurons is one stretch of it."""
    F, D = up.shape
    padded = -(-F // TEAL_BLOCK) * TEAL_BLOCK
    parts = [w for w in (gate, up) if w is not None]
    blocks = [torch.nn.functional.pad(w.t(), (0, padded - F)).reshape(D, -1, TEAL_BLOCK) for w in parts]
    return torch.stack(blocks, dim=2).reshape(D, -1).contiguous()  # [D, Fp / TEAL_BLOCK, P, TEAL_BLOCK] flattened


def moe_panels(
    gate: torch.Tensor | None,
    up: torch.Tensor,
    size: int,
    gate_bias: torch.Tensor | None,
    up_bias: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The permuted gate/up rows [F, D] as `moe_grouped`'s panels: per expert of `size` neurons [D, Wp], gate then up
    columns, zero-padded to Wp (a multiple of 16), and their biases [experts, Wp]; None if Wp > GROUP_WIDTH."""
    F, D = up.shape
    parts = [w for w in (gate, up) if w is not None]
    biases = [b for w, b in ((gate, gate_bias), (up, up_bias)) if w is not None]
    width = len(parts) * size
    padded = -(-width // 16) * 16
    if padded > GROUP_WIDTH:
        return None
    experts = F // size
    columns = torch.cat([w.reshape(experts, size, D) for w in parts], dim=1)  # [experts, width, D]
    panels = torch.nn.functional.pad(columns.transpose(1, 2), (0, padded - width)).contiguous()  # [experts, D, Wp]
    bias = torch.cat([up.new_zeros(F) if b is None else b for b in biases]).reshape(len(parts), experts, size)
    bias = torch.nn.functional.pad(bias.permute(1, 0, 2).reshape(experts, width), (0, padded - width))
    return panels, bias.contiguous()
