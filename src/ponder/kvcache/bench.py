"""Decode speed and cache bytes of a compressed cache against the full one, measured interleaved in one run."""

from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ponder.kvcache.config import KVConfig, check_kv_budget
from ponder.kvcache.longctx import new_cache
from ponder.timing import Rate, cpu_name, paired_ratio, prompt_ids, rate_row


def _decode(model: PreTrainedModel, prompt: torch.Tensor, config: KVConfig | None, new_tokens: int):
    """Seconds of `new_tokens` greedy single-token steps after an untimed prefill of `prompt`, and the cache."""
    cache = new_cache(model, config)
    token = model(prompt, cache=cache, use_cache=True).logits[:, -1:].argmax(-1)  # [1, 1]
    start = time.perf_counter()
    for _ in range(new_tokens):
        token = model(token, cache=cache, use_cache=True).logits[:, -1:].argmax(-1)
    return time.perf_counter() - start, cache


def cache_bytes(cache) -> int:
    """Bytes of K and V a cache holds: a compressed cache counts its own layout, transformers' its tensors."""
    if hasattr(cache, "nbytes"):
        return cache.nbytes()
    return sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)


@torch.inference_mode()
def kv_benchmark(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    config: KVConfig,
    *,
    prompt_tokens: int = 512,
    new_tokens: int = 64,
    repeats: int = 5,
    progress: bool = True,
) -> dict:
    """Decode tok/s at `prompt_tokens` of context, full cache and `config`'s, rounds interleaved after a warm-up;
    the ratio is the median of per-round pairs. Cache bytes are read after the last step."""
    check_kv_budget(config.budget, prompt_tokens + new_tokens)
    prompt = prompt_ids(tokenizer, prompt_tokens)
    cases = {"full": None, "kv": config}
    for case in cases.values():
        _decode(model, prompt, case, 2)
    seconds: dict[str, list[float]] = {name: [] for name in cases}
    caches = {}
    for _ in tqdm(range(repeats), desc="kv bench", unit="round", disable=not progress):
        for name, case in cases.items():
            elapsed, caches[name] = _decode(model, prompt, case, new_tokens)
            seconds[name].append(elapsed)
    full = rate_row({"decode": Rate.of(new_tokens, seconds["full"])}, {})
    kv = rate_row(
        {"decode": Rate.of(new_tokens, seconds["kv"])}, {"decode": paired_ratio(seconds["full"], seconds["kv"])}
    )
    return {
        "kv": {**config.as_dict(), **kv, "cache_bytes": cache_bytes(caches["kv"])},
        "full": {**full, "cache_bytes": cache_bytes(caches["full"])},
        "prompt_tokens": prompt_tokens,
        "new_tokens": new_tokens,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "cpu": cpu_name(),
    }


def render_kv_bench(result: dict) -> None:
    from rich.table import Table

    from ponder.report.terminal import console

    kv = result["kv"]
    table = Table(
        title=f"KV cache · {result['model']} · {result['prompt_tokens']} tokens of context · {result['threads']} "
        f"threads · {result['cpu']} · median (min-max) of {result['repeats']}"
    )
    for column in ("cache", "decode tok/s", "decode ×", "cache MB"):
        table.add_column(column, justify="right")
    for name, row, ratio in (
        ("full", result["full"], "1.00"),
        (f"{kv['policy']} @ {kv['budget']} · {kv['bits']} bits", kv, f"{kv['decode_speedup']:.2f}"),
    ):
        rate = f"{row['decode_tok_s']:.1f} ({row['decode_tok_s_min']:.1f}-{row['decode_tok_s_max']:.1f})"
        table.add_row(name, rate, ratio, f"{row['cache_bytes'] / 1e6:.2f}")
    console.print(table)
