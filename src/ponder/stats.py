"""Compute accounting: the single source of FFN FLOPs and weight bytes per token.

A `ComputeMeter` hooks every decoder layer's FFN module while it is active. A plain (dense) FFN costs its full
FLOPs and bytes for each token it sees. An adaptive FFN module reports what it actually ran by implementing
`pop_compute()`, returning (tokens, weight MACs) since the last call; this module turns MACs into FLOPs (2 each)
and bytes (one element read each), so savings are never estimated anywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from ponder.methods.base import SparseFFN
from ponder.models.ffn import ffn_view
from ponder.models.targets import architecture_of, decoder_layers


@runtime_checkable
class ReportsCompute(Protocol):
    """An FFN module that counts its own work (adaptive modules), in weight multiply-accumulates (MACs).

    A MAC here is one weight element used for one token: 2 FLOPs, and one element read from memory at batch 1.
    """

    def dense_macs(self) -> int:
        """MACs of the dense FFN for one token."""

    def element_size(self) -> int:
        """Bytes per weight element."""

    def pop_compute(self) -> tuple[int, int]:
        """(tokens, MACs) run since the last call, then reset."""


@dataclass
class LayerCompute:
    """Accumulated FFN work of one layer."""

    tokens: int = 0
    flops: float = 0.0
    bytes: float = 0.0
    dense_flops: float = 0.0
    dense_bytes: float = 0.0

    def add(self, tokens: int, flops: float, nbytes: float, dense_flops: int, dense_bytes: int) -> None:
        self.tokens += tokens
        self.flops += flops
        self.bytes += nbytes
        self.dense_flops += tokens * dense_flops
        self.dense_bytes += tokens * dense_bytes


@dataclass
class ComputeReport:
    """FFN compute of everything run under a meter, per layer and in total."""

    layers: list[LayerCompute] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return self.layers[0].tokens if self.layers else 0

    @property
    def ffn_compute(self) -> float:
        """Achieved fraction of dense FFN FLOPs (1.0 for the dense model)."""
        dense = sum(layer.dense_flops for layer in self.layers)
        return sum(layer.flops for layer in self.layers) / dense if dense else float("nan")

    @property
    def ffn_bytes(self) -> float:
        """Achieved fraction of dense FFN weight bytes read per token."""
        dense = sum(layer.dense_bytes for layer in self.layers)
        return sum(layer.bytes for layer in self.layers) / dense if dense else float("nan")

    @property
    def ffn_flops_per_token(self) -> float:
        return sum(layer.flops for layer in self.layers) / self.tokens if self.tokens else float("nan")

    @property
    def ffn_bytes_per_token(self) -> float:
        return sum(layer.bytes for layer in self.layers) / self.tokens if self.tokens else float("nan")

    def per_layer_compute(self) -> list[float]:
        return [layer.flops / layer.dense_flops if layer.dense_flops else float("nan") for layer in self.layers]

    def as_dict(self) -> dict:
        return {
            "ffn_compute": self.ffn_compute,
            "ffn_bytes": self.ffn_bytes,
            "ffn_flops_per_token": self.ffn_flops_per_token,
            "ffn_bytes_per_token": self.ffn_bytes_per_token,
            "ffn_compute_per_layer": self.per_layer_compute(),
        }


def _dense_cost(module: nn.Module, arch) -> tuple[int, int]:
    """(FLOPs, bytes) of one dense token through an FFN module."""
    if isinstance(module, ReportsCompute):
        return 2 * module.dense_macs(), module.dense_macs() * module.element_size()
    view = ffn_view(module, arch)
    return view.flops_per_token(), view.weight_bytes()


class _FFNHooks:
    """Forward hooks on every decoder layer's FFN while a context is active (what the meter and the trace share)."""

    def __init__(self, model: nn.Module):
        arch = architecture_of(model)
        self._ffns = [getattr(layer, arch.ffn) for layer in decoder_layers(model)]
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _hook(self, index: int):
        raise NotImplementedError

    def _attach(self) -> None:
        self._handles = [module.register_forward_hook(self._hook(i)) for i, module in enumerate(self._ffns)]

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


class ComputeMeter(_FFNHooks):
    """Context manager that counts FFN work of a model while active.

    >>> with ComputeMeter(model) as meter:
    ...     model(input_ids)
    >>> meter.report.ffn_compute
    """

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self._costs = [_dense_cost(m, architecture_of(model)) for m in self._ffns]
        self.report = ComputeReport([LayerCompute() for _ in self._ffns])

    def _hook(self, index: int):
        dense_flops, dense_bytes = self._costs[index]
        layer = self.report.layers[index]

        def count(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            if isinstance(module, ReportsCompute):
                tokens, macs = module.pop_compute()
                flops, nbytes = 2 * macs, macs * module.element_size()
            else:
                hidden_states = args[0]
                tokens = hidden_states.numel() // hidden_states.shape[-1]
                flops, nbytes = tokens * dense_flops, tokens * dense_bytes
            layer.add(tokens, flops, nbytes, dense_flops, dense_bytes)

        return count

    def __enter__(self) -> ComputeMeter:
        for module in self._ffns:
            if isinstance(module, ReportsCompute):
                module.pop_compute()  # drop work done before the meter started
        self._attach()
        return self


def decode_weight_bytes(
    model: nn.Module, ffn_bytes_fraction: float = 1.0, *, head_bytes: float | None = None
) -> float:
    """Bytes of weights one batch-1 decode step reads: every parameter once, except an untied input embedding
    (only one row is read), the FFNs scaled by the achieved FFN byte fraction, and the output head counted as
    `head_bytes` where given (the lean decoder's screened greedy head reads an int8 copy). The bandwidth floor."""
    params = {p.data_ptr(): p for p in model.parameters()}.values()
    total = sum(p.numel() * p.element_size() for p in params)
    embedding = model.get_input_embeddings().weight
    output = model.get_output_embeddings()
    if output is None or output.weight.data_ptr() != embedding.data_ptr():
        total -= embedding.numel() * embedding.element_size()
    if output is not None and head_bytes is not None:
        total += head_bytes - output.weight.numel() * output.weight.element_size()
    arch = architecture_of(model)
    ffn_bytes = 0
    for layer in decoder_layers(model):
        ffn_bytes += _dense_cost(getattr(layer, arch.ffn), arch)[1]
    return total - ffn_bytes * (1.0 - ffn_bytes_fraction)


class ComputeTrace(_FFNHooks):
    """Context manager recording, per token and layer, the fraction of dense FFN work that token used.

    >>> with ComputeTrace(model) as trace:
    ...     model(input_ids)           # [1, T]
    ...     fractions = trace.pop()    # [T, layers]; dense FFNs count 1.0

    Rows follow the order tokens passed through the FFNs (batch-major for [B, T] inputs).
    """

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self._layers: list[list[torch.Tensor]] = [[] for _ in self._ffns]

    def _hook(self, index: int):
        def record(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            if isinstance(module, SparseFFN):
                fractions = module.pop_trace()
            else:
                fractions = torch.ones(args[0].numel() // args[0].shape[-1], dtype=torch.float64)
            self._layers[index].append(fractions)

        return record

    def pop(self) -> torch.Tensor:
        """Fractions [tokens, layers] recorded since the last call."""
        columns = [torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64) for parts in self._layers]
        self._layers = [[] for _ in self._ffns]
        return torch.stack(columns, dim=1)

    def __enter__(self) -> ComputeTrace:
        for module in self._ffns:
            if isinstance(module, SparseFFN):
                module.trace = []
        self._attach()
        return self

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        for module in self._ffns:
            if isinstance(module, SparseFFN):
                module.trace = None


@torch.inference_mode()
def inspect_routing(model: nn.Module, input_ids: torch.Tensor) -> dict:
    """Run `input_ids` [B, T] and report, per layer, FFN compute and (for routed modules) routing statistics."""
    arch = architecture_of(model)
    ffns = [getattr(layer, arch.ffn) for layer in decoder_layers(model)]
    adaptive = [m for m in ffns if isinstance(m, SparseFFN)]
    for module in adaptive:
        module.start_routing_stats()
    try:
        with ComputeMeter(model) as meter:
            model(input_ids)
    finally:
        collected = [m.routing_stats() if isinstance(m, SparseFFN) else None for m in ffns]
    layers = []
    for index, (compute, stats) in enumerate(zip(meter.report.per_layer_compute(), collected, strict=True)):
        layers.append({"layer": index, "ffn_compute": compute} | (stats or {}))
    result = {"tokens": meter.report.tokens, "ffn_compute": meter.report.ffn_compute, "layers": layers}
    if any(stats is not None for stats in collected):
        summaries = [layer for layer in layers if "experts_per_token" in layer]
        result["experts_per_token"] = sum(s["experts_per_token"] for s in summaries) / len(summaries)
        names = summaries[0]["pseudo_share"]
        result["pseudo_share"] = {n: sum(s["pseudo_share"][n] for s in summaries) / len(summaries) for n in names}
    return result
