"""Perplexity over non-overlapping windows, with compute accounting from module telemetry.

Protocol (the README's): read the text in Python text mode, tokenize it whole without special tokens, cut it into
non-overlapping `window_len`-token windows from the start, and take the mean token loss over the first N windows,
each window predicting its tokens 2..window_len.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ponder.errors import DataError, PonderError
from ponder.stats import ComputeMeter


@dataclass
class PerplexityResult:
    perplexity: float
    nll: float
    """Mean token negative log-likelihood (nats)."""
    tokens: int
    """Tokens whose loss was scored."""
    windows: int
    window_len: int
    seconds: float
    tokens_per_s: float
    """Evaluated (forwarded) tokens per second, prefill-style."""
    ffn_compute: float
    ffn_bytes: float
    ffn_compute_per_layer: list[float]

    def as_dict(self) -> dict:
        return asdict(self)


def windows_of(token_ids: list[int], window_len: int, windows: int) -> torch.Tensor:
    """The first `windows` full windows as a [N, window_len] tensor, or a DataError saying what fits."""
    if windows <= 0:
        raise PonderError(f"windows must be a positive integer, got {windows}")
    if window_len < 2:
        raise PonderError(f"window length must be at least 2 tokens, got {window_len}")
    available = len(token_ids) // window_len
    if available == 0:
        raise DataError(
            f"text too short: {len(token_ids)} tokens, one window needs {window_len}; use a longer text "
            "or a smaller --window-len"
        )
    if windows > available:
        raise DataError(
            f"text has {available} full windows of {window_len} tokens; pass --windows {available} or fewer"
        )
    ids = torch.tensor(token_ids[: windows * window_len], dtype=torch.long)
    return ids.view(windows, window_len)  # [N, L]


@torch.inference_mode()
def perplexity(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    *,
    windows: int = 20,
    window_len: int = 1024,
    batch_size: int = 1,
    progress: bool = True,
) -> PerplexityResult:
    """Perplexity of `text` under `model` by the windowed protocol above."""
    token_ids = tokenizer(text, add_special_tokens=False).input_ids
    batches = windows_of(token_ids, window_len, windows).split(batch_size)
    total_nll = 0.0
    scored = 0
    start = time.perf_counter()
    with ComputeMeter(model) as meter:
        for batch in tqdm(batches, desc="perplexity", unit="batch", disable=not progress):
            logits = model(batch).logits  # [B, L, V]
            nll = torch.nn.functional.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(), batch[:, 1:].flatten(), reduction="sum"
            )
            total_nll += nll.item()
            scored += batch[:, 1:].numel()
    report = meter.report
    return _result(total_nll, scored, windows, window_len, time.perf_counter() - start,
                   report.ffn_compute, report.ffn_bytes, report.per_layer_compute())  # fmt: skip


def decoder_perplexity(
    decoder, tokenizer: PreTrainedTokenizerBase, text: str, *, windows: int = 20, window_len: int = 1024,
    progress: bool = True,
) -> PerplexityResult:  # fmt: skip
    """Perplexity by the same protocol through a decoder that scores one window at a time (`window_nll`, e.g. the
    quantized runtime's `QuantDecoder`): the same windows, the same tokens scored. Dense: compute is 1 throughout."""
    token_ids = tokenizer(text, add_special_tokens=False).input_ids
    rows = windows_of(token_ids, window_len, windows)
    layers = decoder.model.config.num_hidden_layers
    total_nll, scored = 0.0, 0
    start = time.perf_counter()
    for window in tqdm(rows, desc="perplexity", unit="window", disable=not progress):
        nll, count = decoder.window_nll(window)
        total_nll += nll
        scored += count
    return _result(total_nll, scored, windows, window_len, time.perf_counter() - start, 1.0, 1.0, [1.0] * layers)


def _result(
    total_nll: float, scored: int, windows: int, window_len: int, seconds: float,
    compute: float, nbytes: float, per_layer: list[float],
) -> PerplexityResult:  # fmt: skip
    mean_nll = total_nll / scored
    return PerplexityResult(
        perplexity=math.exp(mean_nll), nll=mean_nll, tokens=scored, windows=windows, window_len=window_len,
        seconds=seconds, tokens_per_s=windows * window_len / seconds, ffn_compute=compute, ffn_bytes=nbytes,
        ffn_compute_per_layer=per_layer,
    )  # fmt: skip
