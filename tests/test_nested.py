"""Nested learners: prefixes sum to the dense FFN, the grouped batch executor equals the reference, and static
slices (uniform or per layer) export as plain checkpoints that load with the same logits."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM

from conftest import tiny_model
from ponder.adaptive import adaptive_modules, convert, get_budget, load, save_adaptive, set_budget
from ponder.cli import main
from ponder.errors import PonderError
from ponder.export import export_slice, greedy_widths, layer_learners, set_static_width
from ponder.models.load import FFN_WIDTHS_KEY


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
