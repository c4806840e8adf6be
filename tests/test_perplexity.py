import math

import pytest
import torch

from conftest import tiny_model
from ponder.data import load_text
from ponder.errors import DataError, PonderError
from ponder.eval import perplexity
from ponder.stats import ComputeMeter

TEXT = load_text("wikitext2-valid")[:6000]


def hand_perplexity(model, tokenizer, text, windows, window_len):
    ids = tokenizer(text, add_special_tokens=False).input_ids
    losses = []
    for w in range(windows):
        window = ids[w * window_len : (w + 1) * window_len]
        with torch.no_grad():
            logits = model(torch.tensor([window])).logits[0]
        log_probs = torch.log_softmax(logits.double(), dim=-1)
        for position in range(1, window_len):
            losses.append(-log_probs[position - 1, window[position]].item())
    return math.exp(sum(losses) / len(losses)), len(losses)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_perplexity_equals_hand_computation(family, tokenizer):
    model = tiny_model(family)
    expected, count = hand_perplexity(model, tokenizer, TEXT, windows=3, window_len=64)
    result = perplexity(model, tokenizer, TEXT, windows=3, window_len=64, progress=False)
    assert result.tokens == count == 3 * 63
    assert result.perplexity == pytest.approx(expected, rel=1e-5)


def test_batching_does_not_change_perplexity(tokenizer):
    model = tiny_model("qwen2")
    one = perplexity(model, tokenizer, TEXT, windows=4, window_len=32, progress=False)
    four = perplexity(model, tokenizer, TEXT, windows=4, window_len=32, batch_size=4, progress=False)
    assert four.perplexity == pytest.approx(one.perplexity, rel=1e-5)


def test_dense_model_reports_full_compute(tokenizer):
    result = perplexity(tiny_model("gemma"), tokenizer, TEXT, windows=2, window_len=32, progress=False)
    assert result.ffn_compute == 1.0
    assert result.ffn_bytes == 1.0
    assert result.ffn_compute_per_layer == [1.0, 1.0]


def test_compute_meter_counts_tokens_and_flops():
    model = tiny_model("llama")
    with ComputeMeter(model) as meter:
        model(torch.zeros(2, 7, dtype=torch.long))
    assert meter.report.tokens == 14
    assert meter.report.ffn_flops_per_token == 2 * (2 * 32 * 64 * 3)  # two layers
    model(torch.zeros(1, 3, dtype=torch.long))  # after exit: not counted
    assert meter.report.tokens == 14


def test_perplexity_errors(tokenizer):
    model = tiny_model("llama")
    with pytest.raises(PonderError, match="positive"):
        perplexity(model, tokenizer, TEXT, windows=0, progress=False)
    with pytest.raises(DataError, match="text too short"):
        perplexity(model, tokenizer, "a few words", windows=1, window_len=64, progress=False)
    with pytest.raises(DataError, match=r"pass --windows \d+ or fewer"):
        perplexity(model, tokenizer, TEXT, windows=10_000, window_len=64, progress=False)
