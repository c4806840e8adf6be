"""Speed of the quantized runtime by `ponder bench`'s definitions, so its rows read like the fp32 path's.

Decode: batch 1, a `prompt_tokens` prompt, then `new_tokens` greedy tokens with EOS ignored; tokens/s = new tokens
/ wall time of the whole call (prompt included). Prefill: `prefill_tokens` tokens from an empty cache. One warm-up
round, then `repeats` rounds of every case, interleaved; medians and ranges. An adaptive decoder
(`AdaptiveQuantDecoder`) adds a row per budget, and with `ceiling` that budget's decode through the perfect
executor: every layer's FFN dense over a contiguous prefix of its neurons (gate and up rows, down's first blocks
along F, copied contiguous) at the compute the budget spent, rounded to whole blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from transformers import PreTrainedTokenizerBase

from ponder.errors import PonderError
from ponder.inference.speculative import SpeculativeDecoder, bench_row
from ponder.quant.formats import BLOCK
from ponder.quant.runtime import QuantDecoder, mat
from ponder.quant.weights import QuantTensor
from ponder.timing import Rate, cpu_name, paired_ratio, peak_rss_mb, prompt_ids, rate_row, run_interleaved


def _prefix(tensor: QuantTensor, rows: int | None = None, cols: int | None = None) -> QuantTensor:
    """The first `rows` rows, or the first `cols` columns (whole blocks), copied contiguous."""
    if rows is not None:
        return QuantTensor(tensor.format, (rows, tensor.shape[1]), tensor.data[:rows].contiguous())
    width = tensor.format.row_bytes(cols)
    return QuantTensor(tensor.format, (tensor.shape[0], cols), tensor.data[:, :width].contiguous())


@contextmanager
def sliced_ffns(decoder: QuantDecoder, fraction: float) -> Iterator[None]:
    """Inside the block, every layer's FFN is the dense kernel over its first round(fraction·F) neurons in whole
    blocks (at least one): the perfect executor at that compute. Its tokens are nonsense; only its time counts."""
    F = decoder.model.config.intermediate_size
    k = min(max(round(fraction * F / BLOCK), 1) * BLOCK, F)
    kept, alive = [], []
    for i, layer in enumerate(decoder._layers):
        p = f"model.layers.{i}.mlp."
        tensors = decoder.model.tensors
        parts = (_prefix(tensors[p + "gate_proj.weight"], rows=k), _prefix(tensors[p + "up_proj.weight"], rows=k),
                 _prefix(tensors[p + "down_proj.weight"], cols=k))  # fmt: skip
        alive.append(parts)
        kept.append((layer.gate, layer.up, layer.down, layer.ffn_kind))
        layer.gate, layer.up, layer.down = (mat(t) for t in parts)
        layer.ffn_kind = 0
    try:
        yield
    finally:
        for layer, (gate, up, down, kind) in zip(decoder._layers, kept, strict=True):
            layer.gate, layer.up, layer.down, layer.ffn_kind = gate, up, down, kind


@torch.inference_mode()
def benchmark_quantized(
    decoder: QuantDecoder,
    tokenizer: PreTrainedTokenizerBase,
    *,
    budgets: list[float] | None = None,
    prompt_tokens: int = 64,
    new_tokens: int = 128,
    prefill_tokens: int = 512,
    repeats: int = 5,
    progress: bool = True,
    ceiling: bool = False,
    speculative: Callable[[QuantDecoder], SpeculativeDecoder] | None = None,
) -> dict:
    """Decode and prefill tokens/s of `decoder`'s dense model and, for an adaptive decoder, of each budget (and
    its ceiling), under the JSON keys of `ponder bench`; with `speculative` (a speculative decoder over `decoder`),
    its decode at the decoder's own budget, timed beside them."""
    if repeats < 1:
        raise PonderError(f"repeats must be >= 1, got {repeats}")
    budgets = list(budgets or [])
    adaptive = hasattr(decoder, "set_budget")
    if budgets and not adaptive:
        raise PonderError("this model has no adaptive modules, so --budgets does not apply: convert it first")
    needed = max(prompt_tokens + new_tokens, prefill_tokens)
    if needed > decoder.max_len:
        raise PonderError(f"the benchmark needs {needed} positions, the decoder holds {decoder.max_len}")
    prompt, prefill = prompt_ids(tokenizer, prompt_tokens), prompt_ids(tokenizer, prefill_tokens)
    restore = decoder.budget if adaptive else 1.0

    def at(budget: float, fn: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            if adaptive:
                decoder.set_budget(budget)
            return fn()

        return run

    def decode() -> None:
        decoder.generate(prompt, new_tokens)

    def fill() -> None:
        decoder.reset()
        decoder.forward(prefill[0])

    def through_ceiling(fraction: float) -> Callable[[], None]:
        def run() -> None:
            with sliced_ffns(decoder, fraction):
                decode()

        return run

    cases, compute = {}, {}
    for budget in [1.0, *budgets]:
        cases[f"decode@{budget}"], cases[f"prefill@{budget}"] = at(budget, decode), at(budget, fill)
        compute[budget] = 1.0
        if budget != 1.0:
            decoder.set_budget(budget)
            decoder.reset_compute()
            decode()
            compute[budget] = decoder.ffn_compute
            if ceiling:
                cases[f"ceiling@{budget}"] = at(1.0, through_ceiling(compute[budget]))
    spec = None if speculative is None else speculative(decoder)
    if spec is not None:
        cases["speculative"] = at(1.0, lambda: spec.generate(prompt, new_tokens))
    seconds = run_interleaved(cases, repeats, progress)
    if adaptive:
        decoder.set_budget(restore)
    extra = {}
    if spec is not None:  # against the dense decode timed beside it
        if adaptive:
            decoder.set_budget(1.0)
        dense_tokens = decoder.generate(prompt, new_tokens)
        row = bench_row(spec, prompt, new_tokens, dense_tokens, seconds["decode@1.0"], seconds["speculative"])
        extra["speculative"] = row
        if adaptive:
            decoder.set_budget(restore)

    def rates(budget: float) -> dict[str, Rate]:
        return {
            "decode": Rate.of(new_tokens, seconds[f"decode@{budget}"]),
            "prefill": Rate.of(prefill_tokens, seconds[f"prefill@{budget}"]),
        }

    rows = []
    for budget in budgets:
        ratios = {k: paired_ratio(seconds[f"{k}@1.0"], seconds[f"{k}@{budget}"]) for k in ("decode", "prefill")}
        row = {"budget": budget, "ffn_compute": compute[budget]} | rate_row(rates(budget), ratios)
        if f"ceiling@{budget}" in seconds:
            bound = paired_ratio(seconds["decode@1.0"], seconds[f"ceiling@{budget}"])
            # the share of the ceiling's time saving this budget's decode captured
            share = (1 - 1 / ratios["decode"]) / (1 - 1 / bound) if bound > 1 else float("nan")
            row |= {"ceiling_decode_speedup": bound, "ceiling_share": share}
        rows.append(row)
    weight_bytes = decoder.model.nbytes
    config = decoder.model.config
    dense = rates(1.0)
    return {
        "model": getattr(config, "_name_or_path", config.model_type),
        "method": decoder.method if adaptive else "dense",
        "mode": decoder.mode if adaptive else None,
        "weights": decoder.model.weights,
        "activations": decoder.activations,
        "threads": decoder.threads,
        "cpu": cpu_name(),
        "prompt_tokens": prompt_tokens,
        "new_tokens": new_tokens,
        "prefill_tokens": prefill_tokens,
        "repeats": repeats,
        "lean_path": "quantized",
        "dense": rate_row(dense, {})
        | {"weight_bytes_per_token": weight_bytes, "bandwidth_gb_s": weight_bytes * dense["decode"].median / 1e9},
        "budgets": rows,
        "peak_rss_mb": peak_rss_mb(),
    } | extra
