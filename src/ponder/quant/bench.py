"""Speed of the quantized runtime by `ponder bench`'s definitions, so its rows read like the fp32 path's.

Decode: batch 1, a `prompt_tokens` prompt, then `new_tokens` greedy tokens with EOS ignored; tokens/s = new tokens
/ wall time of the whole call (prompt included). Prefill: `prefill_tokens` tokens from an empty cache. One warm-up
round, then `repeats` rounds of both, interleaved; medians and ranges. Dense only: the adaptive methods run on
fp32 modules.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase

from ponder.errors import PonderError
from ponder.quant.runtime import QuantDecoder
from ponder.timing import Rate, cpu_name, peak_rss_mb, prompt_ids, rate_row, run_interleaved


@torch.inference_mode()
def benchmark_quantized(
    decoder: QuantDecoder,
    tokenizer: PreTrainedTokenizerBase,
    *,
    prompt_tokens: int = 64,
    new_tokens: int = 128,
    prefill_tokens: int = 512,
    repeats: int = 5,
    progress: bool = True,
) -> dict:
    """Decode and prefill tokens/s of `decoder`'s dense model, under the JSON keys of `ponder bench`."""
    if repeats < 1:
        raise PonderError(f"repeats must be >= 1, got {repeats}")
    needed = max(prompt_tokens + new_tokens, prefill_tokens)
    if needed > decoder.max_len:
        raise PonderError(f"the benchmark needs {needed} positions, the decoder holds {decoder.max_len}")
    prompt, prefill = prompt_ids(tokenizer, prompt_tokens), prompt_ids(tokenizer, prefill_tokens)

    def decode() -> None:
        decoder.generate(prompt, new_tokens)

    def fill() -> None:
        decoder.reset()
        decoder.forward(prefill[0])

    seconds = run_interleaved({"decode": decode, "prefill": fill}, repeats, progress)
    rates = {"decode": Rate.of(new_tokens, seconds["decode"]), "prefill": Rate.of(prefill_tokens, seconds["prefill"])}
    weight_bytes = decoder.model.nbytes
    config = decoder.model.config
    return {
        "model": getattr(config, "_name_or_path", config.model_type),
        "method": "dense",
        "weights": decoder.model.weights,
        "activations": decoder.activations,
        "threads": decoder.threads,
        "cpu": cpu_name(),
        "prompt_tokens": prompt_tokens,
        "new_tokens": new_tokens,
        "prefill_tokens": prefill_tokens,
        "repeats": repeats,
        "lean_path": "quantized",
        "dense": rate_row(rates, {})
        | {"weight_bytes_per_token": weight_bytes, "bandwidth_gb_s": weight_bytes * rates["decode"].median / 1e9},
        "budgets": [],
        "peak_rss_mb": peak_rss_mb(),
    }
