"""GGUF tensors of types the runtime has no kernels for, in the nearest format it runs.

The files users hold are mostly Q4_K_M: Q4_K super-blocks of 256 weights for most projections, Q6_K for some.
A Q4_K super-block is eight 32-weight sub-blocks, each `scale·q - min` with q in 0..15 and a 6-bit scale and min
relative to the super-block's fp16 pair; that is a Q4_1 block (`d·q + m`) up to writing the sub-block's scale and
min in fp16 — so Q4_K repacks into Q4_1 keeping every 4-bit code, with an error of at most 2^-11 of each sub-block's
scale and min (fp16 rounding). The other types are dequantized and requantized: 5- and 6-bit types to Q8_0 (a finer
grid: half a Q8_0 step per weight, about 0.2 % of a block's largest value), 2- and 3-bit K-quants to Q4_1.
"""

from __future__ import annotations

import numpy as np
import torch
from gguf import GGMLQuantizationType
from gguf.quants import Q4_K
from gguf.quants import dequantize as gguf_dequantize

from ponder.quant.formats import FORMATS, Format, quantize

_T = GGMLQuantizationType
NEAREST: dict[GGMLQuantizationType, Format] = {
    _T.Q4_K: FORMATS["q4_1"],
    _T.Q3_K: FORMATS["q4_1"],
    _T.Q2_K: FORMATS["q4_1"],
    _T.Q5_0: FORMATS["q8_0"],
    _T.Q5_1: FORMATS["q8_0"],
    _T.Q5_K: FORMATS["q8_0"],
    _T.Q6_K: FORMATS["q8_0"],
}
"""GGUF block type -> the runtime format its projections run in when no format is asked for. Float types (F16,
BF16) are not here: they load exactly as fp32 rows, and `--weights` quantizes them on request."""

COST = {
    _T.Q4_K: "repacked exactly but for fp16 sub-block scales",
    _T.Q3_K: "requantized (the 3-bit codes on a 4-bit grid)",
    _T.Q2_K: "requantized (the 2-bit codes on a 4-bit grid)",
    _T.Q5_0: "requantized (within half a q8_0 step)",
    _T.Q5_1: "requantized (within half a q8_0 step)",
    _T.Q5_K: "requantized (within half a q8_0 step)",
    _T.Q6_K: "requantized (within half a q8_0 step)",
}
"""What running a type in its NEAREST format costs, for the note a load prints."""

_Q4_K_BYTES = 144  # fp16 d, fp16 dmin, 12 bytes of packed 6-bit scales and mins, 128 bytes of nibbles


def q4_k_as_q4_1(raw: np.ndarray, rows: int) -> torch.Tensor:
    """Q4_K rows (uint8, 144 bytes per 256 weights) as Q4_1 blocks [rows, K/32·20], each sub-block's codes kept."""
    blocks = np.ascontiguousarray(raw, dtype=np.uint8).reshape(-1, _Q4_K_BYTES)
    n = blocks.shape[0]
    d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)  # [n, 1]
    dmin = blocks[:, 2:4].copy().view(np.float16).astype(np.float32)
    sc, mn = Q4_K.get_scale_min(blocks[:, 4:16])  # [n, 8] 6-bit integers
    scale, low = d * sc.astype(np.float32), -(dmin * mn.astype(np.float32))  # value = scale·q + low
    # 32 bytes carry sub-blocks 2j (low nibbles) and 2j+1 (high nibbles), weight i of each in byte i.
    nibbles = blocks[:, 16:].reshape(n, 4, 1, 32) >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 2, 1)
    codes = (nibbles & 0x0F).reshape(n * 8, 32)
    out = np.empty((n * 8, 20), dtype=np.uint8)
    out[:, 0:2] = scale.reshape(-1, 1).astype(np.float16).view(np.uint8)
    out[:, 2:4] = low.reshape(-1, 1).astype(np.float16).view(np.uint8)
    out[:, 4:] = codes[:, :16] | (codes[:, 16:] << 4)  # Q4_1: weight i low nibble of byte i, i+16 its high nibble
    return torch.from_numpy(out.reshape(rows, -1))


def to_nearest(raw: np.ndarray, ggml: GGMLQuantizationType, shape: tuple[int, ...], name: str) -> torch.Tensor:
    """A tensor of a type in NEAREST as blocks of its nearest format [N, K/32·block_bytes]."""
    target = NEAREST[ggml]
    if ggml == _T.Q4_K:
        return q4_k_as_q4_1(raw, shape[0])
    values = torch.from_numpy(np.ascontiguousarray(gguf_dequantize(raw, ggml), np.float32)).reshape(shape)
    return quantize(values, target, name)
