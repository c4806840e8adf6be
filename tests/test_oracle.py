"""Route oracle (Duo-LLM): forced routes run what they say, the price search respects the budget, and the routes
found beat routes of the same per-layer spend that ignore the loss."""

import itertools
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import tiny_model
from ponder.adaptive import adaptive_modules, convert, save_adaptive
from ponder.cli import main
from ponder.data import load_text
from ponder.methods.nested.oracle import choose, forced_routes, route_oracle, token_kind, token_losses
from ponder.stats import ComputeMeter

TEXT = load_text("wikitext2")[:4000]


@pytest.fixture(scope="module")
def nested(tokenizer):
    return convert(tiny_model("llama"), tokenizer, "nested", calibration_tokens=1024, progress=False)


def test_forced_routes_run_what_they_say(nested, tokenizer):
    ids = torch.tensor([tokenizer(TEXT, add_special_tokens=False).input_ids[:40]])
    modules = adaptive_modules(nested)
    learners = modules[0].learners
    dense = token_losses(nested, ids)
    with forced_routes(modules, torch.full((40, len(modules)), learners)):
        torch.testing.assert_close(token_losses(nested, ids), dense, rtol=1e-4, atol=1e-5)
    half = torch.randint(0, learners + 1, (40, len(modules)), generator=torch.Generator().manual_seed(0))
    with ComputeMeter(nested) as meter, forced_routes(modules, half):
        token_losses(nested, ids)
    assert meter.report.ffn_compute == pytest.approx(float(half.double().mean()) / learners)  # no router counted
    assert all(m.forced_learners is None for m in modules)  # the router is back after the block


@settings(max_examples=40, deadline=None)
@given(st.floats(0.0, 1.0), st.integers(0, 2**31 - 1))
def test_choose_respects_the_budget_and_is_optimal_at_its_spend(budget, seed):
    generator = torch.Generator().manual_seed(seed)
    delta = torch.rand(2, 2, 3, generator=generator, dtype=torch.float64)
    delta[..., -1] = 0.0  # big is the reference
    costs = torch.tensor([0.0, 0.25, 1.0], dtype=torch.float64)
    picked = choose(delta, costs, budget)
    spend = float(costs[picked].mean())
    assert spend <= budget + 1e-9
    if budget == 1.0:
        assert torch.equal(picked, delta.argmin(-1))
    # a price's choice is the best of all 81 assignments that spend no more (brute force)
    total = float(delta.gather(-1, picked[..., None]).sum())
    for assignment in itertools.product(range(3), repeat=4):
        other = torch.tensor(assignment).view(2, 2)
        if float(costs[other].mean()) <= spend + 1e-12:
            assert total <= float(delta.gather(-1, other[..., None]).sum()) + 1e-9


def test_token_kinds():
    assert [token_kind(p) for p in (" the", "ing", ",", " 1990", "\n")] == [
        "word start",
        "word piece",
        "punctuation/digit",
        "punctuation/digit",
        "newline",
    ]


def test_oracle_beats_loss_blind_routes_at_its_spend(nested, tokenizer):
    result = route_oracle(nested, tokenizer, TEXT, budget=0.5, tokens=96, progress=False)
    assert result["oracle_ffn_compute"] <= 0.5 + 1e-6
    assert sum(result["oracle_route_share"].values()) == pytest.approx(1.0)
    assert len(result["layers"]) == 2 and len(result["by_difficulty"]) == 4
    # The same per-layer mix of options given to random tokens (seeded) loses more than the oracle's routes.
    modules = adaptive_modules(nested)
    ids = torch.tensor([tokenizer(TEXT, add_special_tokens=False).input_ids[:96]])
    options = torch.tensor(list(result["options"].values()))
    generator = torch.Generator().manual_seed(0)
    shares = torch.tensor(list(result["oracle_route_share"].values()))
    random_routes = options[torch.multinomial(shares, 96 * 2, replacement=True, generator=generator)].view(96, 2)
    with forced_routes(modules, random_routes):
        blind = float(token_losses(nested, ids).mean().exp())
    assert result["oracle_perplexity"] < blind
    assert result["oracle_perplexity"] >= result["dense_perplexity"] * 0.9  # a budget cannot buy much below dense


def test_cli_oracle_json_and_errors(capsys, nested, tokenizer, tmp_path, saved_model):
    directory = tmp_path / "nested"
    save_adaptive(nested, directory, base_model=str(saved_model))
    out = tmp_path / "oracle.json"
    code = main(["oracle", str(directory), "--budget", "0.5", "--tokens", "64", "--json", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    keys = {"oracle_perplexity", "gate_perplexity", "oracle_ffn_compute", "gate_ffn_compute", "layers"}
    assert keys <= result.keys()
    assert "oracle" in capsys.readouterr().out
    code = main(["oracle", str(saved_model), "--quiet"])
    assert code == 2 and "nested" in capsys.readouterr().err
