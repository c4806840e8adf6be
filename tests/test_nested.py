"""Nested learners: prefixes sum to the dense FFN, the grouped batch executor equals the reference, and static
slices (uniform or per layer) export as plain checkpoints that load with the same logits."""

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM

from conftest import kill_tuning_in_step, tiny_model
from ponder.adaptive import adaptive_modules, convert, get_budget, load, save_adaptive, set_budget
from ponder.cli import main
from ponder.data import load_text
from ponder.errors import PonderError
from ponder.inference import LeanDecoder
from ponder.methods import make_config
from ponder.methods.nested.budget_gate import (
    BudgetGate,
    FilmBudgetGate,
    MonotoneBudgetGate,
    control_inputs,
    error_levels,
    make_budget_gate,
)
from ponder.methods.nested.config import NestedConfig
from ponder.methods.nested.export import export_slice, greedy_widths, layer_learners, set_static_width
from ponder.models.load import FFN_WIDTHS_KEY
from ponder.stats import ComputeMeter


@pytest.fixture(scope="module")
def nested(tokenizer):
    return convert(tiny_model("llama"), tokenizer, "nested", calibration_tokens=1024, progress=False)


def test_order_is_a_permutation(nested):
    for module in adaptive_modules(nested):
        assert torch.equal(module.order.sort().values, torch.arange(module.up.shape[0]))
        assert not torch.equal(module.order, torch.arange(module.up.shape[0]))  # calibration reordered


@pytest.mark.parametrize("family", ["gemma", "gpt2"])
def test_all_learners_equal_the_dense_ffn(family, tokenizer):
    model = convert(tiny_model(family), tokenizer, "nested", calibration_tokens=1024, progress=False)
    x = torch.randn(5, 32, generator=torch.Generator().manual_seed(0))
    for module in adaptive_modules(model):
        with torch.no_grad():
            dense = module.dense_forward(x)
            module.static_learners = module.learners
            torch.testing.assert_close(module.reference_forward(x), dense, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(module.fast_forward(x), dense, rtol=1e-5, atol=1e-6)
            module.static_learners = 0  # k = 0 skips the FFN: only the output bias (if any) remains
            expected = torch.zeros_like(dense) if module.down_bias is None else module.down_bias.expand_as(dense)
            torch.testing.assert_close(module.fast_forward(x), expected)
            module.static_learners = None


def test_grouped_batch_equals_reference(nested):
    modules = adaptive_modules(nested)

    @settings(max_examples=15, deadline=None)
    @given(seed=st.integers(0, 10_000), tokens=st.integers(2, 40), budget=st.floats(0.15, 0.99))
    def check(seed, tokens, budget):
        set_budget(nested, budget)
        x = torch.randn(tokens, 32, generator=torch.Generator().manual_seed(seed)) * 3
        for module in modules:
            module.pop_compute()
            with torch.no_grad():
                fast = module.fast_forward(x)
                fast_macs = module.pop_compute()[1]
                reference = module.reference_forward(x)
            torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5)
            assert fast_macs == module.pop_compute()[1]

    check()


def test_slice_exports_a_plain_checkpoint(saved_model, tmp_path):
    model, tokenizer = load(str(saved_model))
    convert(model, tokenizer, "nested", calibration_tokens=1024, progress=False)
    export_slice(model, tokenizer, 0.5, tmp_path / "slice")
    sliced = AutoModelForCausalLM.from_pretrained(tmp_path / "slice")  # stock transformers, no ponder
    assert sliced.config.intermediate_size == 32
    ids = torch.randint(2, 200, (2, 12), generator=torch.Generator().manual_seed(3))
    set_static_width(model, 0.5)
    with torch.no_grad():
        torch.testing.assert_close(sliced(ids).logits, model(ids).logits, rtol=1e-4, atol=1e-5)
        set_static_width(model, None)
        assert not torch.allclose(sliced(ids).logits, model(ids).logits, atol=1e-3)  # the full model differs


def test_static_width_needs_nested(tokenizer):
    model = convert(tiny_model("llama"), tokenizer, "teal", calibration_tokens=1024, progress=False)
    with pytest.raises(PonderError, match="--method nested"):
        set_static_width(model, 0.5)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_per_layer_slice_round_trip(family, tokenizer, tmp_path):
    model = convert(tiny_model(family), tokenizer, "nested", calibration_tokens=1024, progress=False)
    widths = [0.25, 0.75]
    sliced = export_slice(model, tokenizer, widths, tmp_path / "mix")
    loaded, _ = load(str(tmp_path / "mix"))  # ponder reads the per-layer widths from config.json
    d_ff = adaptive_modules(model)[0].up.shape[0]
    assert getattr(loaded.config, FFN_WIDTHS_KEY) == [d_ff // 4, d_ff * 3 // 4]
    assert loaded.num_parameters() == sliced.num_parameters() < model.num_parameters()
    ids = torch.randint(2, 200, (2, 12), generator=torch.Generator().manual_seed(5))
    set_static_width(model, widths)
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, sliced(ids).logits)  # save -> load is bit-exact
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=1e-4, atol=1e-5)
        set_static_width(model, [0.75, 0.25])  # another per-layer choice differs
        assert not torch.allclose(loaded(ids).logits, model(ids).logits, atol=1e-3)


def test_per_layer_slice_refuses_a_corrupt_checkpoint(nested, tokenizer, tmp_path):
    export_slice(nested, tokenizer, [0.25, 0.5], tmp_path / "mix")
    (tmp_path / "mix" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(PonderError, match="re-export"):
        load(str(tmp_path / "mix"))
    with pytest.raises(PonderError, match="one per layer"):
        layer_learners(nested, [0.5, 0.5, 0.5])


def test_greedy_widths_meet_the_mean_and_nest(nested, tokenizer):
    set_budget(nested, 0.4)  # measured at full budget, then restored
    means = (0.75, 0.5, 0.25)
    previous = None
    for width, widths in zip(means, greedy_widths(nested, tokenizer, means, progress=False), strict=True):
        assert abs(sum(widths) / len(widths) - width) <= 0.5 / 16 + 1e-9
        assert all(0 < w <= 1 for w in widths)
        if previous is not None:  # a lower mean never widens a layer
            assert all(w <= p for w, p in zip(widths, previous, strict=True))
        previous = widths
    assert get_budget(nested) == 0.4 and all(m.static_learners is None for m in adaptive_modules(nested))


def test_export_cli(saved_model, tmp_path, capsys):
    model, tokenizer = load(str(saved_model))
    convert(model, tokenizer, "nested", calibration_tokens=1024, progress=False)
    save_adaptive(model, tmp_path / "nested", base_model=str(saved_model))
    source = str(tmp_path / "nested")
    assert main(["export", source, "--width", "0.25", "-o", str(tmp_path / "out"), "--quiet"]) == 0
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "out").config.intermediate_size == 16
    assert main(["export", source, "--width", "0.5,0.25", "-o", str(tmp_path / "mix"), "--quiet"]) == 0
    assert "8 4 of 16 learners" in capsys.readouterr().out
    assert main(["export", source, "--width", "0.5", "--allocation", "greedy", "-o", str(tmp_path / "g")]) == 0
    assert "mean width 0.500" in capsys.readouterr().out
    assert main(["eval", str(tmp_path / "g"), "--windows", "1", "--window-len", "64", "--quiet"]) == 0
    capsys.readouterr()
    for argv, message in [
        (["--width", "0.25", "-o", str(tmp_path / "out")], "exists"),
        (["--width", "0.5,0.25,0.5", "-o", str(tmp_path / "x")], "one per layer"),
        (["--width", "0.5,0.25", "--allocation", "greedy", "-o", str(tmp_path / "x")], "one mean --width"),
    ]:
        assert main(["export", source, *argv, "--quiet"]) == 2
        assert message in capsys.readouterr().err
    assert main(["export", str(saved_model), "--width", "0.5", "-o", str(tmp_path / "x")]) == 2
    assert "--method nested" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


# --- the router that takes the budget as an input (router=budget) ----------------------------------------------


@pytest.fixture(scope="module")
def budget_routed(tokenizer):
    config = NestedConfig(router="budget")
    return convert(tiny_model("llama"), tokenizer, "nested", config=config, calibration_tokens=2048, progress=False)


def calibration_ids(tokenizer, tokens: int = 2048) -> torch.Tensor:
    ids = tokenizer(load_text("wikitext2-valid"), add_special_tokens=False).input_ids[:tokens]
    return torch.tensor(ids).view(-1, 512)


@pytest.fixture(scope="module")
def calib_ids(tokenizer):
    return calibration_ids(tokenizer, 1024)


def test_budget_router_meets_any_budget_on_calibration_text(budget_routed, tokenizer):
    ids = calibration_ids(tokenizer)

    @settings(max_examples=10, deadline=None)
    @given(budget=st.floats(0.2, 0.95))
    def check(budget):
        set_budget(budget_routed, budget)
        with torch.no_grad(), ComputeMeter(budget_routed) as meter:
            budget_routed(ids)
        assert meter.report.ffn_compute == pytest.approx(budget, abs=0.02)

    check()


def test_budget_router_one_checkpoint_monotone_compute(budget_routed, tokenizer, tmp_path):
    ids = torch.randint(2, 200, (2, 40), generator=torch.Generator().manual_seed(4))
    computes = []
    for budget in (0.2, 0.35, 0.5, 0.65, 0.8, 0.95):
        set_budget(budget_routed, budget)
        with torch.no_grad(), ComputeMeter(budget_routed) as meter:
            budget_routed(ids)
        computes.append(meter.report.ffn_compute)
    assert computes == sorted(computes) and computes[0] < computes[-1] - 0.3
    set_budget(budget_routed, 1.0)
    with torch.no_grad():
        torch.testing.assert_close(budget_routed(ids).logits, tiny_model("llama")(ids).logits, rtol=0, atol=0)


def test_budget_router_round_trip_and_decode(budget_routed, tokenizer, saved_model, tmp_path):
    model, tok = load(str(saved_model))
    convert(model, tok, "nested", config=NestedConfig(router="budget"), calibration_tokens=1024, budget=0.5,
            progress=False)  # fmt: skip
    save_adaptive(model, tmp_path / "routed", base_model=str(saved_model))
    loaded, _ = load(str(tmp_path / "routed"))
    assert isinstance(adaptive_modules(loaded)[0].router, MonotoneBudgetGate) and get_budget(loaded) == 0.5
    ids = torch.randint(2, 200, (1, 24), generator=torch.Generator().manual_seed(6))
    runner = LeanDecoder(loaded).runner
    with torch.no_grad():
        full = loaded(ids).logits[0]
        torch.testing.assert_close(full, model(ids).logits[0], rtol=0, atol=0)
        runner.reset(1)
        steps = [runner.forward(ids[:, t : t + 1])[0] for t in range(ids.shape[1])]
    torch.testing.assert_close(torch.stack(steps), full, rtol=1e-4, atol=1e-4)


def test_unknown_router(tokenizer):
    with pytest.raises(PonderError, match="router must be one of"):
        convert(tiny_model("llama"), tokenizer, "nested", config=make_config("nested", {"router": "oracle"}))


def random_gate(kind: str, seed: int) -> BudgetGate:
    """A gate as training might leave it: every parameter random, the budget's own weights included."""
    gate = make_budget_gate(kind, 32, 8, 6)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in gate.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 2)
    return gate


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), budgets=st.lists(st.floats(0.0, 2.0), min_size=2, max_size=6))
def test_monotone_gate_never_runs_fewer_learners_at_a_higher_budget(seed, budgets):
    gate = random_gate("monotone", seed)
    x = torch.randn(64, 32, generator=torch.Generator().manual_seed(seed + 1))
    learners = torch.stack([gate.needed(x, u) for u in sorted(budgets)])  # [budgets, N]
    assert (learners.diff(dim=0) >= 0).all()


def test_film_gate_is_not_monotone():
    """The property above is not vacuous: the FiLM gate of older models breaks it for most random weights."""
    x = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    budgets = torch.linspace(0.05, 1.5, 30).tolist()
    broken = 0
    for seed in range(10):
        gate = random_gate("film", seed)
        learners = torch.stack([gate.needed(x, u) for u in budgets])
        broken += bool((learners.diff(dim=0) < 0).any())
    assert broken >= 5


def test_controller_inverts_the_compute_curve():
    budgets = [0.1, 0.3, 0.5, 0.9]
    inputs = control_inputs(lambda u: min(u, 1.0) ** 2, budgets)  # a gate that spends u² at input u
    assert inputs == pytest.approx([b**0.5 for b in budgets], abs=1e-4)
    flat = control_inputs(lambda u: 0.5 if u < 1 else 0.7, [0.4, 0.6, 0.8])  # unattainable targets: clamped, monotone
    assert flat == sorted(flat)


def test_error_levels_give_the_mean_prefix_length():
    errors = torch.rand(500, 8, generator=torch.Generator().manual_seed(0)).sort(1, descending=True).values
    targets = torch.tensor([1.0, 4.0, 7.5])
    levels = error_levels(errors, targets)
    lengths = (errors[None] > levels[:, None, None]).sum(2).float().mean(1)
    torch.testing.assert_close(lengths, targets, atol=0.02, rtol=0)


# --- the end-to-end phase (tune_steps) ----------------------------------------------------------------------------


def tuned(tokenizer, steps: int, **kwargs):
    config = NestedConfig(router="budget", tune_steps=steps)
    return convert(tiny_model("llama", 2), tokenizer, "nested", config=config, calibration_tokens=1024,
                   progress=False, **kwargs)  # fmt: skip


def test_tuning_trains_only_the_gates_and_keeps_budgets(tokenizer):
    before, after = tuned(tokenizer, 0), tuned(tokenizer, 12)
    changed = set()
    for name, tensor in after.state_dict().items():
        if not torch.equal(tensor, before.state_dict()[name]):
            changed.add(name.split(".mlp.")[-1].split(".")[0])
    assert changed == {"router", "thresholds"}  # the gates and the controller's inputs; no model weight
    ids = torch.randint(2, 200, (2, 30), generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        torch.testing.assert_close(after(ids).logits, tiny_model("llama", 2)(ids).logits, rtol=0, atol=0)
        for budget in (0.3, 0.6):
            set_budget(after, budget)
            with ComputeMeter(after) as meter:
                after(calibration_ids(tokenizer, 1024))
            assert meter.report.ffn_compute == pytest.approx(budget, abs=0.02)


def test_tuning_resumes_after_kill(tokenizer, tmp_path, monkeypatch):
    uninterrupted = tuned(tokenizer, 14)
    kill_tuning_in_step(monkeypatch, 12)  # after the checkpoint of step 10
    with pytest.raises(KeyboardInterrupt):
        tuned(tokenizer, 14, work_dir=tmp_path / "work")
    monkeypatch.undo()
    resumed = tuned(tokenizer, 14, work_dir=tmp_path / "work", resume=True)
    for name, tensor in uninterrupted.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], tensor), name


def test_tuning_needs_the_budget_router():
    with pytest.raises(ValueError, match="router=budget"):
        NestedConfig(router="error", tune_steps=10)


def saved_before_option(model, directory, base_model: str, option: str):
    """`model` saved, then loaded from a config without `option`, as written before the option existed."""
    save_adaptive(model, directory, base_model=base_model)
    config_file = directory / "ponder_config.json"
    config = json.loads(config_file.read_text())
    del config["config"][option]
    config_file.write_text(json.dumps(config))
    return load(str(directory))[0]


def test_error_router_and_models_saved_before_the_option(saved_model, tokenizer, tmp_path, calib_ids):
    model, tok = load(str(saved_model))
    convert(model, tok, "nested", config=NestedConfig(router="error"), calibration_tokens=1024, progress=False)
    set_budget(model, 0.5)
    with torch.no_grad(), ComputeMeter(model) as meter:
        model(calib_ids)
    assert meter.report.ffn_compute == pytest.approx(0.5, abs=0.02)
    loaded = saved_before_option(model, tmp_path / "old", str(saved_model), "router")
    with torch.no_grad():
        torch.testing.assert_close(loaded(calib_ids).logits, model(calib_ids).logits, rtol=0, atol=0)


def test_film_gate_models_load_as_converted(saved_model, tokenizer, tmp_path, calib_ids):
    """A model converted with the FiLM gate, whose config predates the budget_gate option, loads with that gate."""
    model, tok = load(str(saved_model))
    config = NestedConfig(router="budget", budget_gate="film")
    convert(model, tok, "nested", config=config, calibration_tokens=1024, budget=0.5, progress=False)
    loaded = saved_before_option(model, tmp_path / "film", str(saved_model), "budget_gate")
    assert isinstance(adaptive_modules(loaded)[0].router, FilmBudgetGate)
    with torch.no_grad():
        torch.testing.assert_close(loaded(calib_ids).logits, model(calib_ids).logits, rtol=0, atol=0)


def test_unknown_budget_gate():
    with pytest.raises(ValueError, match="budget_gate must be one of"):
        NestedConfig(budget_gate="relu")
