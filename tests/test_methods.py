"""Sparse-FFN methods: exact at budget 1, budgets respected and monotone, executors equal the reference."""

import json

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from conftest import FAMILIES, tiny_model
from ponder.adaptive import adaptive_modules, convert, full_budget, get_budget, load, save_adaptive, set_budget
from ponder.data import load_text
from ponder.errors import PonderError
from ponder.inference import LeanDecoder
from ponder.methods import METHODS
from ponder.methods.base import SparseFFN
from ponder.state import adaptive_state
from ponder.stats import ComputeMeter
from ponder.train.capture import capture_ffn_inputs

METHOD_NAMES = sorted(METHODS)
CALIB_TOKENS = 1024


def converted(family: str, method: str, tokenizer, seed: int = 0):
    model = tiny_model(family, seed)
    return convert(model, tokenizer, method, calibration_tokens=CALIB_TOKENS, progress=False)


def applicable(family: str, method: str) -> bool:
    return not (method == "cats" and family == "gpt2")  # CATS needs a gate


@pytest.fixture(scope="module")
def calib_ids(tokenizer):
    ids = tokenizer(load_text("wikitext2-valid"), add_special_tokens=False).input_ids[:CALIB_TOKENS]
    return torch.tensor(ids).view(2, 512)


@pytest.mark.parametrize(("family", "method"), [(f, m) for f in FAMILIES for m in METHOD_NAMES if applicable(f, m)])
def test_exact_at_full_budget(family, method, tokenizer):
    ids = torch.randint(2, 200, (2, 17), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = tiny_model(family)(ids).logits
        model = converted(family, method, tokenizer)
        assert get_budget(model) == 1.0
        actual = model(ids).logits
    exact = 0 if family != "gpt2" else 1e-6  # GPT-2's Conv1D uses addmm, our view F.linear
    torch.testing.assert_close(actual, expected, rtol=exact, atol=exact)


def test_cats_refuses_plain_ffn(tokenizer):
    with pytest.raises(PonderError, match="needs a GLU FFN"):
        converted("gpt2", "cats", tokenizer)


# skip: in a 2-layer model one frequent token type is ~8 % of the decisions, a step no threshold can split;
# tests/test_skip.py checks its budget on a deeper model.
@pytest.mark.parametrize("method", [m for m in METHOD_NAMES if m != "skip"])
def test_achieved_budget_on_calibration_text(method, tokenizer, calib_ids):
    model = converted("llama", method, tokenizer)
    for budget in (0.75, 0.6, 0.5):
        set_budget(model, budget)
        with torch.no_grad(), ComputeMeter(model) as meter:
            model(calib_ids)
        assert meter.report.ffn_compute == pytest.approx(budget, abs=0.02), budget


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_lower_budget_never_counts_more(method, tokenizer):
    model = converted("qwen3", method, tokenizer)
    ids = torch.randint(2, 200, (1, 64), generator=torch.Generator().manual_seed(1))

    @settings(max_examples=8, deadline=None)
    @given(st.floats(0.45, 1.0), st.floats(0.45, 1.0))
    @example(1.0, 0.97)  # just below dense: predictor once counted its own cost on top of every block (1.05)
    @example(0.9375, 0.90625)  # nested's FiLM gate counted 0.780 at the lower budget, 0.778 at the higher
    def check(a, b):
        low, high = sorted((a, b))
        computes = []
        for budget in (low, high):
            set_budget(model, budget)
            with torch.no_grad(), ComputeMeter(model) as meter:
                model(ids)
            computes.append(meter.report.ffn_compute)
        assert computes[0] <= computes[1] + 1e-9

    check()


@pytest.mark.parametrize("method", [m for m in METHOD_NAMES if m != "core"])  # core keeps per-sequence state
def test_decode_executor_equals_reference(method, tokenizer):
    """The fast path and the decoder's bound one-token path (where a method has one) equal the reference."""
    model = converted("llama", method, tokenizer)
    modules = adaptive_modules(model)
    paths = [module.token_forward() for module in modules]

    @settings(max_examples=15, deadline=None)
    @given(seed=st.integers(0, 10_000), budget=st.floats(0.45, 0.99) | st.just(1.0))
    def check(seed, budget):
        set_budget(model, budget)
        x = torch.randn(1, 32, generator=torch.Generator().manual_seed(seed))
        for module, path in zip(modules, paths, strict=True):
            module.pop_compute()
            with torch.no_grad():
                reference = module.reference_forward(x) if budget < 1 else module.dense_forward(x)
                reference_macs = module.pop_compute()[1]
                outputs = []
                if budget < 1:  # budget 1 runs dense, not the fast path
                    outputs.append(module.fast_forward(x))
                    assert module.pop_compute()[1] == reference_macs  # every executor counts the same work
                if path is not None:
                    outputs.append(path(x[0].clone())[None].clone())
                    assert module.pop_compute()[1] == reference_macs
                for out in outputs:
                    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-6)

    check()


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_cached_decode_equals_full_forward_under_sparsity(method, tokenizer):
    model = converted("llama", method, tokenizer)
    set_budget(model, 0.6)
    ids = torch.randint(2, 200, (1, 24), generator=torch.Generator().manual_seed(5))
    runner = LeanDecoder(model).runner
    with torch.no_grad():
        full = model(ids).logits[0]  # [T, V], batched reference executor
        runner.reset(1)
        steps = [runner.forward(ids[:, t : t + 1])[0] for t in range(ids.shape[1])]  # one token at a time
    torch.testing.assert_close(torch.stack(steps), full, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_lean_decode_at_full_budget_is_the_dense_kernel(method, tokenizer, monkeypatch):
    """At budget 1 the decoder's one-token path gives the dense model's logits bit for bit, and where a method has
    a bound token path it does not go through `rows_forward` (whose per-layer Python cost made budget 1 decode
    slower than the dense model it came from)."""
    ids = torch.randint(2, 200, (1, 12), generator=torch.Generator().manual_seed(6))
    dense_runner = LeanDecoder(tiny_model("llama")).runner
    runner = LeanDecoder(converted("llama", method, tokenizer)).runner
    bound = [layer.ffn_token is not None for layer in runner.layers]
    original = SparseFFN.rows_forward
    calls = []
    monkeypatch.setattr(SparseFFN, "rows_forward", lambda self, x: calls.append(x.shape[0]) or original(self, x))
    with torch.no_grad():
        dense_runner.reset(1)
        runner.reset(1)
        for t in range(ids.shape[1]):
            token = ids[:, t : t + 1]
            assert torch.equal(runner.forward(token), dense_runner.forward(token))
    if all(bound):
        assert calls == []


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_save_load_round_trip(method, tokenizer, tmp_path):
    base = tmp_path / "base"
    tiny_model("mistral").save_pretrained(base)
    tokenizer.save_pretrained(base)
    model, tok = load(str(base))
    convert(model, tok, method, calibration_tokens=CALIB_TOKENS, budget=0.6, progress=False)
    save_adaptive(model, tmp_path / "converted", base_model=str(base))
    config = json.loads((tmp_path / "converted" / "ponder_config.json").read_text())
    assert config["method"] == method and config["budget"] == 0.6
    loaded, _ = load(str(tmp_path / "converted"))
    assert get_budget(loaded) == 0.6
    ids = torch.randint(2, 200, (1, 20), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)
    for a, b in zip(adaptive_modules(loaded), adaptive_modules(model), strict=True):
        assert torch.equal(a.thresholds, b.thresholds)


def test_full_budget_context_gives_dense_teacher(tokenizer):
    model = converted("llama", "teal", tokenizer)
    set_budget(model, 0.5)
    ids = torch.randint(2, 200, (1, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), full_budget(model):
        dense = model(ids).logits
    assert get_budget(model) == 0.5
    with torch.no_grad():
        torch.testing.assert_close(dense, tiny_model("llama")(ids).logits, rtol=0, atol=0)


@pytest.mark.parametrize("budget", [0.0, -0.5, 1.5, float("nan")])
def test_set_budget_outside_range(budget, tokenizer):
    model = converted("llama", "teal", tokenizer)
    with pytest.raises(PonderError, match=r"outside \(0, 1\]"):
        set_budget(model, budget)


def test_budget_below_calibrated_range(tokenizer):
    model = converted("llama", "cats", tokenizer)
    with pytest.raises(PonderError, match="below the lowest calibrated"):
        set_budget(model, 0.2)


def test_corrupt_state_is_a_clear_error(tokenizer, tmp_path, saved_model):
    model, tok = load(str(saved_model))
    convert(model, tok, "teal", calibration_tokens=CALIB_TOKENS, progress=False)
    save_adaptive(model, tmp_path / "c", base_model=str(saved_model))
    (tmp_path / "c" / "ponder_state.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(PonderError, match="missing or corrupt"):
        load(str(tmp_path / "c"))


def test_capture_shapes(tokenizer):
    model = tiny_model("qwen2")
    inputs = capture_ffn_inputs(model, tokenizer, load_text("wikitext2-valid"), tokens=1024, progress=False)
    assert [tuple(t.shape) for t in inputs] == [(1024, 32), (1024, 32)]


@pytest.mark.parametrize("block_size", [1, 4])
def test_predictor_block_importance_is_block_output_norm(block_size):
    from ponder.adaptive import replace_ffns
    from ponder.methods.predictor import PredictorConfig

    module = replace_ffns(tiny_model("llama"), "predictor", PredictorConfig(block_size=block_size))[0]
    x = torch.randn(10, 32)
    with torch.no_grad():
        h = module.intermediate(x).view(10, module.blocks, block_size)  # [N, B, S]
        rows = module.down_t.view(module.blocks, block_size, -1)  # [B, S, D]
        expected = torch.einsum("nbs,bsd->nbd", h, rows).norm(dim=-1)  # [N, B]
        torch.testing.assert_close(module.block_importance(x), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_trace_matches_meter(method, tokenizer):
    from ponder.stats import ComputeTrace

    model = converted("llama", method, tokenizer)
    set_budget(model, 0.6)
    length = 80 if method == "core" else 24  # core's first 64 tokens run dense
    ids = torch.randint(2, 200, (1, length), generator=torch.Generator().manual_seed(4))
    runner = LeanDecoder(model).runner
    with torch.no_grad(), ComputeMeter(model) as meter, ComputeTrace(model) as trace:
        model(ids)
        batched = trace.pop()  # [T, layers]
        runner.reset(1)
        for t in range(ids.shape[1]):
            runner.forward(ids[:, t : t + 1])
        stepwise = trace.pop()
    assert batched.shape == stepwise.shape == (length, 2)
    assert float(batched.mean()) == pytest.approx(meter.report.ffn_compute, rel=1e-6, abs=1e-9)  # same work
    assert len(set(batched.flatten().tolist())) > 1  # tokens differ: the trace is per token, not an average
    torch.testing.assert_close(stepwise, batched)  # one token at a time spends what the batch spent per token


def test_greedy_schedule_lowers_the_least_sensitive_layer_first():
    from ponder.methods.allocate import greedy_schedule

    levels = [1.0, 0.75, 0.5, 0.25]
    increase = torch.tensor([[0.0, 0.01, 0.02, 0.03], [0.0, 1.0, 2.0, 3.0], [0.0, 0.1, 0.5, 2.0]])  # [layers, P]
    targets = [0.25, 0.5, 0.75, 0.9, 1.0]
    schedule = greedy_schedule(increase, levels, targets)  # [targets, layers]
    torch.testing.assert_close(schedule.mean(dim=1), torch.tensor(targets))
    assert schedule[3].tolist() == pytest.approx([0.7, 1.0, 1.0])  # layer 0 is nearly free: it goes first
    assert torch.all(schedule[:-1] <= schedule[1:] + 1e-6)  # a lower target never gives a layer more


def test_greedy_allocation_hits_the_budget_with_uneven_layers(tokenizer, calib_ids):
    model = tiny_model("llama")
    convert(model, tokenizer, "teal", calibration_tokens=CALIB_TOKENS, allocation="greedy", progress=False)
    assert adaptive_state(model).calibration["allocation"] == "greedy"
    set_budget(model, 0.5)
    with torch.no_grad(), ComputeMeter(model) as meter:
        model(calib_ids)
    assert meter.report.ffn_compute == pytest.approx(0.5, abs=0.02)
    low, high = sorted(meter.report.per_layer_compute())
    assert high - low > 0.05  # the layers got different budgets


def test_unknown_allocation(tokenizer):
    with pytest.raises(PonderError, match="allocation 'best' is unknown"):
        convert(tiny_model("llama"), tokenizer, "teal", calibration_tokens=CALIB_TOKENS, allocation="best")


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_teal_split_search_never_worse_than_uniform(family):
    """On its calibration tokens, the searched split's output error at a grid budget is at most the uniform one's,
    and the kept fractions still add up to the budget."""
    from ponder.adaptive import replace_ffns
    from ponder.methods.teal import TealConfig

    inputs = torch.distributions.Laplace(0.0, 1.0).sample((512, 32)).mul_(torch.rand(32) + 0.2)  # heavy tails
    errors, computes = {}, {}
    for split in ("uniform", "search"):
        module = replace_ffns(tiny_model(family), "teal", TealConfig(split=split))[0]
        with torch.no_grad():
            module.calibrate(inputs)
            module.set_budget(0.5)
            dense = module.dense_forward(inputs)
            module.pop_compute()
            out = module.reference_forward(inputs)
        errors[split] = ((out - dense).norm(dim=1) / dense.norm(dim=1)).mean().item()
        computes[split] = module.pop_compute()[1] / (len(inputs) * module.dense_macs())
    assert errors["search"] <= errors["uniform"] + 1e-6
    assert abs(computes["search"] - 0.5) < 0.03


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_teal_wina_kernels_equal_its_reference_and_spend_the_budget(family):
    from ponder.adaptive import replace_ffns
    from ponder.methods.teal import TealConfig

    inputs = torch.distributions.Laplace(0.0, 1.0).sample((512, 32)).mul_(torch.rand(32) + 0.2)
    module = replace_ffns(tiny_model(family), "teal", TealConfig(score="wina"))[0]
    path = module.token_forward()
    with torch.no_grad():
        module.calibrate(inputs)
        module.set_budget(0.5)
        module.pop_compute()
        module.reference_forward(inputs)
        assert module.pop_compute()[1] / (len(inputs) * module.dense_macs()) == pytest.approx(0.5, abs=0.03)
        for t in range(8):
            x = inputs[t : t + 1]
            reference = module.reference_forward(x)
            macs = module.pop_compute()[1]
            for run in (module.fast_forward, lambda x: path(x[0].clone())[None]):
                torch.testing.assert_close(run(x), reference, rtol=1e-5, atol=1e-5)
                assert module.pop_compute()[1] == macs
        module.set_budget(1.0)
        torch.testing.assert_close(path(inputs[0].clone()), module.dense_forward(inputs[:1])[0], rtol=0, atol=0)


def test_teal_wina_decides_by_the_ffn_not_its_parametrisation():
    """Scaling input i by 1/s and its gate/up columns by s leaves the FFN as it was; WINA's scores, and so its
    sparse outputs, stay the same, while magnitude scores (TEAL) change their decisions."""
    from ponder.adaptive import replace_ffns
    from ponder.methods.teal import TealConfig

    inputs = (
        torch.distributions.Laplace(0.0, 1.0)
        .sample(
            (256, 32),
        )
        .mul_(torch.rand(32) + 0.2)
    )
    scale = torch.ones(32)
    scale[:8] = 8.0
    outputs = {}
    for score in ("wina", "magnitude"):
        for rescaled in (False, True):
            model = tiny_model("llama")
            mlp = model.model.layers[0].mlp
            x = inputs
            if rescaled:
                with torch.no_grad():
                    mlp.gate_proj.weight.mul_(scale)
                    mlp.up_proj.weight.mul_(scale)
                x = inputs / scale
            module = replace_ffns(model, "teal", TealConfig(score=score, split="uniform"))[0]
            with torch.no_grad():
                module.calibrate(x)
                module.set_budget(0.5)
                outputs[score, rescaled] = module.reference_forward(x)
    torch.testing.assert_close(outputs["wina", True], outputs["wina", False], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(outputs["magnitude", True], outputs["magnitude", False], rtol=1e-3, atol=1e-4)
