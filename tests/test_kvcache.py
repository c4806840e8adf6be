"""The KV cache under a budget: exact at full budget, never above it, merges convex, generate() = stepwise forward,
bad budgets refused in one line. Tiny random Llama (tests/conftest.py)."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import DynamicCache

from conftest import tiny_model
from ponder.errors import PonderError
from ponder.kvcache import POLICIES, KVConfig, check_kv_budget, make_cache, parse_kv_budget
from ponder.kvcache.d2o import merge_evicted
from ponder.kvcache.longctx import kv_perplexity, scored_decode

PROMPT, STEPS = 40, 12
SMALL = dict(window=4, residual=4, group=4)  # windows the tiny runs can exceed


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


@pytest.fixture(scope="module")
def ids():
    torch.manual_seed(1)
    return torch.randint(2, 256, (1, PROMPT + STEPS))


@torch.inference_mode()
def stepwise(model, ids: torch.Tensor, cache, *, prompt: int = PROMPT, after_step=None) -> torch.Tensor:
    """Logits [T - prompt + 1, V]: one prefill of `prompt` tokens, then one token at a time through `cache`."""
    logits = [model(ids[:, :prompt], cache=cache, use_cache=True).logits[0, -1:]]
    if after_step:
        after_step(cache)
    for t in range(prompt, ids.shape[1]):
        logits.append(model(ids[:, t : t + 1], cache=cache, use_cache=True).logits[0])
        if after_step:
            after_step(cache)
    return torch.cat(logits)


@pytest.mark.parametrize("text", ["0", "-0.5", "-3", "1.5", "abc"])
def test_bad_budgets_are_one_line_errors(text):
    with pytest.raises(PonderError) as error:
        parse_kv_budget(text)
    assert "\n" not in str(error.value) and "KV budget" in str(error.value)


def test_budget_forms():
    assert parse_kv_budget("0.25") == 0.25 and parse_kv_budget("512") == 512 and parse_kv_budget("1") == 1.0
    assert check_kv_budget(64, context=64) == 64
    with pytest.raises(PonderError, match="above the context of 63"):
        check_kv_budget(64, context=63)
    with pytest.raises(PonderError, match="unknown KV policy 'lru'"):
        KVConfig(policy="lru")
    with pytest.raises(PonderError, match="kv_bits"):
        KVConfig(bits=2)


@pytest.mark.parametrize("policy", POLICIES)
def test_full_budget_is_exact(model, ids, policy):
    """Budget 1.0 at 16 bits: the same logits as transformers' own cache, and as one full forward."""
    reference = stepwise(model, ids, DynamicCache(config=model.config))
    compressed = stepwise(model, ids, make_cache(model, KVConfig(budget=1.0, policy=policy)))
    torch.testing.assert_close(compressed, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(compressed, model(ids).logits[0, PROMPT - 1 :], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("budget", [0.3, 9])
def test_cache_never_exceeds_its_budget(model, ids, policy, budget):
    config = KVConfig(budget=budget, policy=policy, **SMALL)
    sizes = []

    def check(cache) -> None:
        seen = cache.get_seq_length()
        allowed = max(1, int(budget * seen)) if isinstance(budget, float) else min(budget, seen)
        entries = cache.entries()
        assert sum(entries) <= allowed * len(entries)  # D2O moves budget between layers, never adds to it
        if policy != "d2o":
            assert max(entries) <= allowed
        sizes.append(entries)

    logits = stepwise(model, ids, make_cache(model, config), after_step=check)
    assert torch.isfinite(logits).all()
    assert sizes[-1][0] < PROMPT + STEPS  # it did evict


def test_window_keeps_sinks_and_the_newest(model, ids):
    cache = make_cache(model, KVConfig(budget=12, policy="window", sinks=4))
    stepwise(model, ids, cache)
    kept = cache.layers[0].positions[0, 0].tolist()
    total = PROMPT + STEPS
    assert kept == list(range(4)) + list(range(total - 8, total))


def test_merges_are_convex_combinations():
    """An evicted entry similar enough to a kept one moves it to their mass-weighted mean; a dissimilar one is
    dropped; the result lies within the originals' bounds and carries their mass."""
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [-1.0, 0.2]])[None, None]  # [1, 1, 4, 2]
    values = torch.tensor([[2.0, 0.0], [0.0, 4.0], [4.0, 2.0], [9.0, 9.0]])[None, None]
    mass = torch.tensor([[[1.0, 1.0, 3.0, 1.0]]])
    keep, evict = torch.tensor([[[0, 1]]]), torch.tensor([[[2, 3]]])
    merged_k, merged_v, merged_m = merge_evicted(keys, values, mass, keep, evict, threshold=0.9)
    torch.testing.assert_close(merged_k[0, 0, 0], (keys[0, 0, 0] + 3 * keys[0, 0, 2]) / 4)
    torch.testing.assert_close(merged_v[0, 0, 0], (values[0, 0, 0] + 3 * values[0, 0, 2]) / 4)
    torch.testing.assert_close(merged_k[0, 0, 1], keys[0, 0, 1])  # entry 3 (cosine < 0.9 to both) was dropped
    assert merged_m.tolist() == [[[4.0, 1.0]]]


def test_d2o_cache_entries_stay_convex(model, ids):
    """Layer 0's keys do not depend on the cache: every D2O entry of it lies within the full keys' bounds, per
    head and channel, and the masses count tokens that were merged, never more than seen."""
    full = DynamicCache(config=model.config)
    model(ids, cache=full, use_cache=True)
    cache = make_cache(model, KVConfig(budget=0.25, policy="d2o", merge_threshold=0.0, **SMALL))
    stepwise(model, ids, cache)
    layer, reference = cache.layers[0], full.layers[0].keys  # [1, H, L, D]
    low, high = reference.amin(dim=2, keepdim=True), reference.amax(dim=2, keepdim=True)
    assert (layer.keys >= low - 1e-5).all() and (layer.keys <= high + 1e-5).all()
    assert (layer.mass >= 1).all() and (layer.mass.sum(-1) <= PROMPT + STEPS).all()
    assert (layer.mass > 1).any()  # threshold 0 merges every evicted entry somewhere


@pytest.mark.parametrize("config", [dict(policy="window"), dict(policy="h2o", bits=4), dict(policy="d2o")])
def test_generate_equals_stepwise_forward(model, ids, config):
    config = KVConfig(budget=0.5, **config, **SMALL)
    prompt = ids[:, :PROMPT]
    out = model.generate(
        prompt, attention_mask=torch.ones_like(prompt), cache=make_cache(model, config),
        max_new_tokens=STEPS, do_sample=False, eos_token_id=None, pad_token_id=0,
    )  # fmt: skip
    cache, token, greedy = make_cache(model, config), prompt, []
    for _ in range(STEPS):
        token = model(token, cache=cache, use_cache=True).logits[:, -1:].argmax(-1)  # [1, 1]
        greedy.append(int(token))
    assert out[0, PROMPT:].tolist() == greedy


def test_quantized_cache(model, ids):
    """8 bits stays close to the full cache, 4 bits less so; both take fewer bytes; the residual is exact."""
    reference = stepwise(model, ids, DynamicCache(config=model.config))
    errors, sizes = {}, {}
    for bits in (16, 8, 4):
        cache = make_cache(model, KVConfig(bits=bits, **SMALL))
        errors[bits] = float((stepwise(model, ids, cache) - reference).abs().max())
        sizes[bits] = cache.nbytes()
        layer = cache.layers[0]
        assert layer.quantized_upto == (0 if bits == 16 else (PROMPT + STEPS - 4) // 4 * 4)
    assert errors[16] < 1e-5 < errors[8] < errors[4]
    assert sizes[4] < sizes[8] < sizes[16] / 2
    full = DynamicCache(config=model.config)
    model(ids, cache=full, use_cache=True)
    quantized = make_cache(model, KVConfig(bits=4, **SMALL))
    model(ids, cache=quantized, use_cache=True)
    residual = slice(quantized.layers[0].quantized_upto, None)
    torch.testing.assert_close(quantized.layers[0].keys[:, :, residual], full.layers[0].keys[:, :, residual])


def test_cache_refuses_a_model_without_the_hook(model, ids):
    cache = make_cache(model, KVConfig(budget=0.5))
    model.set_attn_implementation("sdpa")
    try:
        with pytest.raises(PonderError, match="does not report to the KV cache"):
            model(ids, cache=cache, use_cache=True)
    finally:
        from ponder.kvcache.attention import PENDING

        PENDING.set(None)


def test_long_context_perplexity_protocol(model, ids, tokenizer):
    """The full cache scores the last tokens as one full forward does; a compressed one scores them worse."""
    window = ids[0, :48]
    logits = model(window[None]).logits[0, -17:-1]
    expected = float(torch.nn.functional.cross_entropy(logits, window[-16:], reduction="sum"))
    assert scored_decode(model, window, DynamicCache(config=model.config), 16) == pytest.approx(expected, rel=1e-5)
    text = "the river runs to the quiet sea and the sea returns it " * 20
    full = kv_perplexity(model, tokenizer, text, None, windows=2, window_len=64, progress=False)
    same = kv_perplexity(model, tokenizer, text, KVConfig(budget=1.0), windows=2, window_len=64, progress=False)
    small = kv_perplexity(model, tokenizer, text, KVConfig(budget=4), windows=2, window_len=64, progress=False)
    assert full.tokens == 2 * 32 and full.perplexity == same.perplexity
    assert math.isfinite(small.perplexity) and small.perplexity != full.perplexity
    with pytest.raises(PonderError, match="above the context"):
        kv_perplexity(model, tokenizer, text, KVConfig(budget=100), windows=1, window_len=64, progress=False)
