"""Perplexity through a compressed cache, scored as generation would see it.

Protocol: non-overlapping `window_len`-token windows of the text (as `ponder.eval.perplexity`); each window's first
`window_len - decode` tokens are one prefill forward (full attention, then the cache compresses), and its last
`decode` tokens are fed one at a time through the compressed cache. The `decode` scored tokens are the last ones
of the window: the prefill's last logits predict the first, each decode step the next. Without a config (or with
one that compresses nothing) the same loop runs on transformers' own `DynamicCache`: the full-cache baseline.
"""

from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from ponder.errors import PonderError
from ponder.eval.perplexity import PerplexityResult, _result, windows_of
from ponder.kvcache.cache import make_cache
from ponder.kvcache.config import KVConfig, check_kv_budget
from ponder.stats import ComputeMeter

DECODE_TOKENS = 256


def new_cache(model: PreTrainedModel, config: KVConfig | None):
    """The compressed cache `config` asks for, or transformers' full one."""
    if config is None or not config.compresses:
        return DynamicCache(config=model.config)
    return make_cache(model, config)


def scored_decode(model: PreTrainedModel, window: torch.Tensor, cache, decode: int) -> float:
    """Summed NLL of the last `decode` tokens of `window` [L]: one prefill, then `decode - 1` single steps."""
    prompt = window[None, : window.shape[0] - decode]  # [1, L - N]
    logits = [model(prompt, cache=cache, use_cache=True).logits[:, -1:]]
    for t in range(window.shape[0] - decode, window.shape[0] - 1):
        logits.append(model(window[None, t : t + 1], cache=cache, use_cache=True).logits)  # [1, 1, V]
    targets = window[-decode:]
    return float(torch.nn.functional.cross_entropy(torch.cat(logits, 1)[0].float(), targets, reduction="sum"))


@torch.inference_mode()
def kv_perplexity(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    config: KVConfig | None,
    *,
    windows: int = 4,
    window_len: int = 2048,
    decode: int | None = None,
    progress: bool = True,
) -> PerplexityResult:
    """Perplexity of the last `decode` tokens of each window, decoded through `config`'s cache (the protocol
    above); `decode` defaults to 256, or half the window if that is shorter. `tokens_per_s` counts every token
    forwarded, prefill included."""
    decode = decode if decode is not None else min(DECODE_TOKENS, window_len // 2)
    if not 1 <= decode < window_len:
        raise PonderError(f"decode tokens must be in [1, {window_len - 1}] for {window_len}-token windows")
    if config is not None:
        check_kv_budget(config.budget, window_len)
    rows = windows_of(tokenizer(text, add_special_tokens=False).input_ids, window_len, windows)
    total, start = 0.0, time.perf_counter()
    with ComputeMeter(model) as meter:
        for window in tqdm(rows, desc="kv perplexity", unit="window", disable=not progress):
            total += scored_decode(model, window, new_cache(model, config), decode)
    report = meter.report
    return _result(total, windows * decode, windows, window_len, time.perf_counter() - start,
                   report.ffn_compute, report.ffn_bytes, report.per_layer_compute())  # fmt: skip
