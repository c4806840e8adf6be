"""The perfect width executor: how fast a decode step at FFN compute f could be on this machine.

Each layer's FFN runs the dense kernel over a contiguous, pre-sliced fraction f of its neurons: f of the FFN's
bytes, one stream per matrix, nothing chosen, nothing gathered. No exact width method reads fewer bytes at compute
f, or reads them faster than the dense kernel streams them. So a decode through these paths bounds what any width
method can gain at f, and `ponder bench --ceiling` sets it beside each budget's real decode: the gap between the
two is the executor's, the gap between the ceiling and 1 is the budget's. The sliced model's tokens are nonsense;
only its time means anything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

import torch

from ponder.inference.decode import LeanDecoder, NativeDenseFFN, RopeRunner
from ponder.kernels import native
from ponder.methods.base import SparseFFN
from ponder.models.ffn import FFNView

TokenPath = Callable[[torch.Tensor], torch.Tensor]


def _rows(t: torch.Tensor | None, k: int) -> torch.Tensor | None:
    return None if t is None else t[:k].contiguous()


def sliced_paths(decoder: LeanDecoder, fraction: float) -> list[TokenPath] | None:
    """Per layer, a one-token FFN path through the first round(fraction·F) neurons (at least one), copied
    contiguous; None where the decoder has no native one-token path or a layer is not a width FFN (`skip` models
    also skip attention, which this bound does not cover)."""
    runner = decoder.runner
    if not isinstance(runner, RopeRunner) or native.library() is None:
        return None
    paths = []
    for layer in runner.layers:
        if isinstance(layer.ffn, NativeDenseFFN):
            view = layer.ffn.view
        elif isinstance(layer.ffn, SparseFFN) and layer.skip is None and layer.ffn_token is not None:
            m = layer.ffn  # its dense weights, as the budget-1 path runs them
            view = FFNView(module=m, up=m.up, down=m.down, act=m.act, gate=m.gate, up_bias=m.up_bias,
                           down_bias=m.down_bias, gate_bias=m.gate_bias)  # fmt: skip
        else:
            return None
        k = min(max(round(fraction * view.d_ff), 1), view.d_ff)
        sliced = replace(view, gate=_rows(view.gate, k), up=_rows(view.up, k), down=view.down[:, :k].contiguous(),
                         gate_bias=_rows(view.gate_bias, k), up_bias=_rows(view.up_bias, k))  # fmt: skip
        paths.append(NativeDenseFFN(sliced, layer.ffn.activation).token_forward())
    return paths


@contextmanager
def ffn_paths(decoder: LeanDecoder, paths: list[TokenPath]) -> Iterator[None]:
    """The decoder's one-token FFN paths replaced by `paths` inside the block, restored after it."""
    layers = decoder.runner.layers
    kept = [layer.ffn_token for layer in layers]
    try:
        for layer, path in zip(layers, paths, strict=True):
            layer.ffn_token = path
        yield
    finally:
        for layer, path in zip(layers, kept, strict=True):
            layer.ffn_token = path
