"""Speculative decoding: greedy output equals the target's own, sampling keeps the target's distribution."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from conftest import tiny_model
from ponder.errors import PonderError
from ponder.inference import LeanDecoder
from ponder.inference.sampling import Sampling, token_probabilities
from ponder.inference.speculative import (
    DraftLength,
    LayerDraft,
    PromptLookup,
    QuantTarget,
    SpeculativeDecoder,
    verify,
)
from ponder.quant import QuantDecoder, quantize_model


def _small_llama(seed: int = 0, layers: int = 3):
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)  # fmt: skip
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.fixture(scope="module")
def quantized():
    return quantize_model(_small_llama(), "q8_0")


PROMPTS = [[5, 6, 7, 8, 5, 6, 7, 9, 5, 6], [3, 1, 4, 1, 5, 9, 2, 6], list(range(40, 60)) * 2, [200]]


def test_prompt_lookup_copies_what_followed_the_latest_longest_match():
    lookup = PromptLookup(max_ngram=3)
    assert lookup.propose([1, 2, 3, 9, 1, 2, 3, 7, 8, 1, 2, 3], None, 3) == [7, 8, 1]  # the later 3-gram wins
    assert lookup.propose([4, 5, 6, 4, 5], None, 4) == [6, 4, 5]  # a 2-gram; the draft may run into the suffix
    assert lookup.propose([1, 2, 3], None, 2) == []  # no earlier occurrence of any suffix
    assert lookup.propose([7, 7], None, 2) == [7]  # a 1-gram at the very start
    assert lookup.source == 1
    assert PromptLookup(max_ngram=3, min_ngram=2).propose([7, 7], None, 2) == []  # a 1-gram is too short
    with pytest.raises(PonderError, match="max_ngram"):
        PromptLookup(0)


def test_the_draft_length_verifies_drafts_only_when_they_are_expected_to_pay():
    policy = DraftLength(prior=0.5)
    for tokens, seconds in [(1, 1.0), (2, 1.4), (3, 1.8)]:  # a compute-bound CPU pass: +0.4 a token
        policy.observe_pass(tokens, seconds)
    assert policy.pass_cost(5) == pytest.approx(2.6)  # extrapolated from the passes seen
    assert policy.choose("a", 4) == 1  # 1.5 tokens for 1.4 beats 1 for 1; 1.75 for 1.8 does not
    for _ in range(50):
        policy.observe_cycle("rare", drafts=3, kept=0)
        policy.observe_cycle("often", drafts=4, kept=4)
    assert policy.acceptance("rare") < 0.05 and policy.acceptance("often") > 0.95
    assert policy.choose("rare", 4) == 0  # a plain step
    assert policy.choose("often", 4) == 4
    assert policy.choose("often", 0) == 0
    policy.observe_drafting("often", drafts=2, seconds=2.0)  # a draft as dear as a pass: no longer worth it
    assert policy.choose("often", 4) == 0


def test_adaptive_speculation_keeps_plain_greedy_output(quantized):
    decoder = QuantDecoder(quantized, threads=2, max_len=96, chunk=8)
    speculative = SpeculativeDecoder(QuantDecoder(quantized, threads=2, max_len=96, chunk=8), max_draft=4)
    for prompt in PROMPTS:
        ids = torch.tensor([prompt])
        assert torch.equal(speculative.generate(ids, 40), decoder.generate(ids, 40))
    assert set(speculative.policy.pass_seconds) >= {1}  # the policy timed the passes it ran


@pytest.mark.parametrize("max_draft", [1, 3, 7])
def test_greedy_speculative_on_the_quantized_runtime_equals_plain_greedy(quantized, max_draft):
    decoder = QuantDecoder(quantized, threads=2, max_len=96, chunk=8)
    target = QuantDecoder(quantized, threads=2, max_len=96, chunk=8)
    speculative = SpeculativeDecoder(target, max_draft=max_draft, adaptive=False)  # every draft is verified
    accepted = 0
    for prompt in PROMPTS:
        ids = torch.tensor([prompt])
        expected = decoder.generate(ids, 40)
        assert torch.equal(speculative.generate(ids, 40), expected)
        stats = speculative.stats
        assert stats.emitted == 40 and stats.accepted <= stats.drafted
        accepted += stats.accepted
    assert accepted > 0  # the drafts were used, not only the plain steps


def test_greedy_speculative_on_the_lean_decoder_equals_plain_greedy():
    model = tiny_model("llama")
    plain = LeanDecoder(model, max_len=96)
    speculative = SpeculativeDecoder(LeanDecoder(model, max_len=96), adaptive=False)
    for prompt in PROMPTS:
        ids = torch.tensor([prompt])
        assert torch.equal(speculative.generate(ids, 32), plain.generate(ids, 32))
    assert speculative.stats.verifies < 32  # some pass kept a draft


def test_eos_and_max_new_tokens_end_generation_where_plain_greedy_does(quantized):
    decoder = QuantDecoder(quantized, threads=1, max_len=96, chunk=8)
    ids = torch.tensor([PROMPTS[2]])
    full = decoder.generate(ids, 30)[0, ids.shape[1] :].tolist()
    eos = full[12]
    expected = decoder.generate(ids, 30, eos_token_id=eos)
    speculative = SpeculativeDecoder(QuantDecoder(quantized, threads=1, max_len=96, chunk=8), adaptive=False)
    assert torch.equal(speculative.generate(ids, 30, eos_token_id=eos), expected)
    streamed = []
    out = speculative.generate(ids, 5, on_token=lambda t: streamed.append(int(t[0])))
    assert out.shape[1] == ids.shape[1] + 5 and streamed == out[0, ids.shape[1] :].tolist()


def test_a_layer_draft_of_every_layer_is_always_accepted_and_a_subset_changes_nothing(quantized):
    ids = torch.tensor([[9, 8, 7, 6, 5]])
    plain = QuantDecoder(quantized, threads=2, max_len=96, chunk=8).generate(ids, 24)
    decoder = QuantDecoder(quantized, threads=2, max_len=96, chunk=8)
    whole = SpeculativeDecoder(decoder, LayerDraft(decoder, [0, 1, 2]), max_draft=4, adaptive=False)
    assert torch.equal(whole.generate(ids, 24), plain)
    assert whole.stats.acceptance_rate == 1.0 and whole.stats.tokens_per_verify > 3
    decoder = QuantDecoder(quantized, threads=2, max_len=96, chunk=8)
    subset = SpeculativeDecoder(decoder, LayerDraft(decoder, [0, 2]), max_draft=4, adaptive=False)
    assert torch.equal(subset.generate(ids, 24), plain)
    assert subset.stats.drafted > 0
    with pytest.raises(PonderError, match="increasing indices"):
        LayerDraft(decoder, [2, 0])


def _chi_square_bound(bins: int) -> float:
    """Mean plus six standard deviations of a chi-square of `bins - 1` degrees of freedom: a false alarm is
    rarer than one run in a million."""
    dof = bins - 1
    return dof + 6 * (2 * dof) ** 0.5


def _chi_square(counts: torch.Tensor, probs: torch.Tensor) -> tuple[float, int]:
    """Pearson's statistic over bins expected to hold >= 5 draws (the rest merged into one bin)."""
    expected = probs * counts.sum()
    big = expected >= 5
    observed = torch.cat([counts[big], counts[~big].sum()[None]])
    wanted = torch.cat([expected[big], expected[~big].sum()[None]])
    keep = wanted > 0
    return float(((observed[keep] - wanted[keep]) ** 2 / wanted[keep]).sum()), int(keep.sum())


@pytest.mark.parametrize("which", ["likely", "unlikely"])
def test_rejection_sampling_of_a_draft_keeps_the_target_distribution(which):
    torch.manual_seed(0)
    logits = torch.randn(2, 12) * 2  # [drafts + 1, V]
    sampling = Sampling(temperature=0.8, top_p=0.9)
    probs = token_probabilities(logits[0], sampling)
    draft = int(probs.argmax()) if which == "likely" else int(probs.argmin())  # argmin: outside the nucleus
    generator = torch.Generator().manual_seed(1)
    counts = torch.zeros(12)
    for _ in range(6000):
        kept, nxt = verify(logits, [draft], sampling, generator)
        counts[draft if kept else nxt] += 1  # the first emitted token
    statistic, bins = _chi_square(counts, probs)
    assert statistic < _chi_square_bound(bins)
    assert counts[probs == 0].sum() == 0  # never a token the nucleus drops


def test_sampled_speculative_tokens_follow_the_models_distribution(quantized):
    """The second generated token's marginal, exact by summing over the first, against 3000 speculative draws
    whose first cycles verify prompt-lookup drafts (the prompt repeats, so drafts are always proposed)."""
    sampling = Sampling(temperature=0.7)
    prompt = [5, 6, 7, 5, 6, 7, 5, 6]
    exact = QuantDecoder(quantized, threads=1, max_len=32, chunk=8)
    first = token_probabilities(exact.forward(torch.tensor(prompt)), sampling)  # [V]
    second = torch.zeros_like(first)
    for token in first.nonzero()[:, 0].tolist():
        exact.reset()
        second += first[token] * token_probabilities(exact.forward(torch.tensor([*prompt, token])), sampling)
    decoder = SpeculativeDecoder(QuantDecoder(quantized, threads=1, max_len=32, chunk=8), sampling=sampling,
                                 adaptive=False)  # fmt: skip
    counts = torch.zeros_like(first)
    drafted = 0
    torch.manual_seed(0)
    for _ in range(3000):
        out = decoder.generate(torch.tensor([prompt]), 2)
        counts[out[0, -1]] += 1
        drafted += decoder.stats.drafted
    assert drafted >= 3000
    statistic, bins = _chi_square(counts, second)
    assert statistic < _chi_square_bound(bins)


def test_bad_settings_are_refused(quantized):
    decoder = QuantDecoder(quantized, threads=1, max_len=32, chunk=4)
    with pytest.raises(PonderError, match="max_draft must be >= 1"):
        SpeculativeDecoder(decoder, max_draft=0)
    with pytest.raises(PonderError, match="chunk is 4"):
        SpeculativeDecoder(decoder, max_draft=4)
    speculative = SpeculativeDecoder(decoder, max_draft=3)
    with pytest.raises(PonderError, match="one sequence"):
        speculative.generate(torch.zeros(2, 3, dtype=torch.long), 4)
    with pytest.raises(PonderError, match="max_new_tokens"):
        speculative.generate(torch.zeros(1, 3, dtype=torch.long), 0)
    assert isinstance(speculative.target, QuantTarget)
