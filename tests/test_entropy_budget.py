"""The entropy-driven budget: its allocation is the best one, its stepwise scoring is the protocol's perplexity, and
each pass runs at the budget its bin asks for."""

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import tiny_model
from ponder.adaptive import convert, set_budget
from ponder.data import load_text
from ponder.entropy_budget import (
    STEP,
    EntropyBudget,
    EntropyKnob,
    allocate,
    cached_calibration,
    calibrate,
    entropy,
    stepwise_perplexity,
)
from ponder.errors import PonderError
from ponder.eval import perplexity


@pytest.fixture(scope="module")
def teal(tokenizer):
    return convert(tiny_model("llama"), tokenizer, "teal", calibration_tokens=2048, progress=False)


@pytest.fixture(scope="module")
def text():
    return load_text("wikitext2")[:20000]


def test_entropy_is_that_of_the_softmax():
    assert float(entropy(torch.zeros(64))) == pytest.approx(math.log(64), rel=1e-6)
    assert float(entropy(torch.tensor([0.0, -1e4]))) == pytest.approx(0.0, abs=1e-6)


@settings(max_examples=40, deadline=None)
@given(bins=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_allocation_is_the_cheapest_that_averages_to_the_mean(bins, seed):
    grid = [0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65]
    losses = torch.rand(bins, len(grid), generator=torch.Generator().manual_seed(seed))
    chosen = allocate(losses, grid, 0.5)
    assert sum(grid[j] for j in chosen) / bins == pytest.approx(0.5)
    feasible = [
        c for c in itertools.product(range(len(grid)), repeat=bins) if abs(sum(grid[j] for j in c) - 0.5 * bins) < 1e-6
    ]
    best = min(sum(float(losses[b, j]) for b, j in enumerate(c)) for c in feasible)
    assert sum(float(losses[b, j]) for b, j in enumerate(chosen)) == pytest.approx(best)


def test_level_follows_the_bins():
    policy = EntropyBudget(0.5, [1.0, 2.0], [0.4, 0.5, 0.6])
    assert [policy.level(h) for h in (0.5, 1.5, 2.5)] == [0.4, 0.5, 0.6]
    with pytest.raises(PonderError, match="bin edges"):
        EntropyBudget(0.5, [1.0], [0.5])


def test_stepwise_scoring_at_a_fixed_budget_is_the_protocols_perplexity(teal, tokenizer, text):
    set_budget(teal, 0.5)
    whole = perplexity(teal, tokenizer, text, windows=2, window_len=64, progress=False)
    stepwise = stepwise_perplexity(teal, tokenizer, text, windows=2, window_len=64, progress=False)
    assert stepwise.perplexity == pytest.approx(whole.perplexity, rel=1e-4)
    assert stepwise.ffn_compute == pytest.approx(whole.ffn_compute, abs=1e-3)
    assert stepwise.levels == {"0.5": 2 * 63} and len(stepwise.window_nlls) == 2


def test_every_pass_runs_at_its_bins_budget(teal, tokenizer, text):
    """All bins at 1: dense exactly; all at the mean: the fixed run; mixed: each pass counted at its level, the
    compute spent between the levels'."""
    set_budget(teal, 0.5)
    fixed = stepwise_perplexity(teal, tokenizer, text, windows=2, window_len=48, progress=False)
    same = stepwise_perplexity(teal, tokenizer, text, policy=EntropyBudget(0.5, [3.0], [0.5, 0.5]), windows=2,
                               window_len=48, progress=False)  # fmt: skip
    assert same.window_nlls == fixed.window_nlls
    set_budget(teal, 1.0)
    dense = stepwise_perplexity(teal, tokenizer, text, windows=2, window_len=48, progress=False)
    full = stepwise_perplexity(teal, tokenizer, text, policy=EntropyBudget(1.0, [3.0], [1.0, 1.0]), windows=2,
                               window_len=48, progress=False)  # fmt: skip
    assert full.window_nlls == dense.window_nlls and full.ffn_compute == pytest.approx(1.0)
    set_budget(teal, 0.5)
    ids = torch.tensor([tokenizer(text, add_special_tokens=False).input_ids[:48]])
    with torch.no_grad():
        median = float(entropy(teal(ids).logits[0]).median())  # passes fall on each side of the edge
    mixed = stepwise_perplexity(teal, tokenizer, text, policy=EntropyBudget(0.5, [median], [0.3, 0.9]),
                                windows=2, window_len=48, progress=False)  # fmt: skip
    assert sum(mixed.levels.values()) == 2 * 47
    assert set(mixed.levels) <= {"0.3", "0.5", "0.9"} and mixed.levels.get("0.5") == 2  # each window's first pass
    assert 0.25 < mixed.ffn_compute < 0.95


def test_calibration_averages_to_the_mean_and_is_cached(teal, tokenizer, monkeypatch, tmp_path):
    monkeypatch.setenv("PONDER_CACHE", str(tmp_path))
    calib = load_text("wikitext2-valid")[:20000]
    policy = calibrate(teal, tokenizer, calib, 0.5, bins=3, spread=0.1, windows=2, window_len=64, progress=False)
    assert sum(policy.levels) / 3 == pytest.approx(0.5) and all(0.4 - 1e-9 <= v <= 0.6 + 1e-9 for v in policy.levels)
    assert policy.edges == sorted(policy.edges) and len(policy.edges) == 2
    assert all(abs(round(v / STEP) * STEP - v) < 1e-9 for v in policy.levels)
    first = cached_calibration(teal, tokenizer, calib, 0.5, bins=3, spread=0.1, windows=2, window_len=64)
    monkeypatch.setattr("ponder.entropy_budget.calibrate", lambda *a, **k: pytest.fail("the cache was not read"))
    again = cached_calibration(teal, tokenizer, calib, 0.5, bins=3, spread=0.1, windows=2, window_len=64)
    assert again == first and first.levels == policy.levels


def test_bad_settings_are_refused(teal, tokenizer):
    with pytest.raises(PonderError, match="adaptive model"):
        EntropyKnob(tiny_model("llama"), EntropyBudget(0.5, [], [0.5]))
    with pytest.raises(PonderError, match="below the lowest calibrated"):
        calibrate(teal, tokenizer, "text " * 400, 0.01, windows=1, window_len=32, progress=False)
    with pytest.raises(PonderError, match="bins"):
        calibrate(teal, tokenizer, "text " * 400, 0.5, bins=0, windows=1, window_len=32, progress=False)
