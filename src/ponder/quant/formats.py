"""Weight formats of the quantized runtime: fp32 rows and GGUF's blocks of 32 weights.

Quantizing and dequantizing go through `gguf.quants` (llama.cpp's own reference in numpy), so a block ponder
writes is the block llama.cpp would write, and dequantizing is the specification every kernel is tested against.
Blocks are kept as uint8 rows: a weight [N, K] in a block format is a tensor [N, K/32·block_bytes].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize as gguf_dequantize
from gguf.quants import quantize as gguf_quantize

from ponder.errors import PonderError

BLOCK = 32
"""Weights per block of every block format (GGUF's QK8_0 = QK4_0 = QK4_1)."""


@dataclass(frozen=True)
class Format:
    """One weight format: its name, the runtime's code for it (runtime.c's PQ_* enum) and its GGUF type."""

    name: str
    code: int
    ggml: GGMLQuantizationType

    @property
    def blocked(self) -> bool:
        return self.ggml != GGMLQuantizationType.F32

    @property
    def block_bytes(self) -> int:
        return GGML_QUANT_SIZES[self.ggml][1]

    def row_bytes(self, cols: int) -> int:
        """Bytes of one row of `cols` weights."""
        return cols // BLOCK * self.block_bytes if self.blocked else 4 * cols


FORMATS = {
    "f32": Format("f32", 0, GGMLQuantizationType.F32),
    "q8_0": Format("q8_0", 1, GGMLQuantizationType.Q8_0),
    "q4_0": Format("q4_0", 2, GGMLQuantizationType.Q4_0),
    "q4_1": Format("q4_1", 3, GGMLQuantizationType.Q4_1),
}
QUANTIZED = [name for name, f in FORMATS.items() if f.blocked]
_BY_GGML = {f.ggml: f for f in FORMATS.values()}


def get_format(name: str) -> Format:
    """The format called `name`; a clear error for anything else."""
    if name not in FORMATS:
        raise PonderError(f"unknown weight format '{name}': use one of {', '.join(FORMATS)}")
    return FORMATS[name]


def format_of_ggml(ggml: GGMLQuantizationType) -> Format | None:
    """The runtime format that holds GGUF type `ggml` as it is, None if the runtime has none."""
    return _BY_GGML.get(ggml)


def check_shape(name: str, shape: tuple[int, ...], fmt: Format) -> None:
    """Raise unless a weight `name` of `shape` [N, K] can be stored in `fmt` (block formats need K % 32 == 0)."""
    if len(shape) != 2:
        raise PonderError(f"{name} has shape {tuple(shape)}: quantized weights must be 2-d [out, in]")
    if fmt.blocked and shape[1] % BLOCK:
        raise PonderError(
            f"{name} is {shape[0]}x{shape[1]}: {fmt.name} needs an input dimension that is a multiple of {BLOCK}; "
            f"use --weights f32 for this model"
        )


def quantize(weight: torch.Tensor, fmt: Format, name: str = "weight") -> torch.Tensor:
    """weight [N, K] in `fmt`: uint8 blocks [N, K/32·block_bytes], or a contiguous fp32 copy for f32."""
    check_shape(name, tuple(weight.shape), fmt)
    values = weight.detach().to(torch.float32).contiguous()
    if not fmt.blocked:
        return values.clone()
    blocks = gguf_quantize(values.numpy(), fmt.ggml)  # [N, K/32·block_bytes] uint8
    return torch.from_numpy(np.ascontiguousarray(blocks))


def dequantize(data: torch.Tensor, fmt: Format, cols: int) -> torch.Tensor:
    """The fp32 weights [N, cols] that `data` (from `quantize`, or a GGUF file's rows) stands for."""
    if not fmt.blocked:
        return data.to(torch.float32)
    values = gguf_dequantize(data.numpy(), fmt.ggml)  # [N, cols] float32
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).reshape(-1, cols)
