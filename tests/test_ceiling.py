"""The perfect width executor (`ponder bench --ceiling`): whole slices equal the dense path, partial slices are the
first neurons' FFN, the swap is undone, and the bench reports it beside each budget."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ROPE_FAMILIES, tiny_model
from ponder.adaptive import convert, set_budget
from ponder.inference import LeanDecoder
from ponder.inference.bench import benchmark
from ponder.inference.ceiling import ffn_paths, sliced_paths
from ponder.kernels import native
from ponder.models.ffn import ffn_view
from ponder.models.targets import architecture_of, decoder_layers

pytestmark = pytest.mark.skipif(native.library() is None, reason="the sliced paths run the C kernel")


@pytest.fixture(scope="module")
def teal(tokenizer):
    model = convert(tiny_model("llama"), tokenizer, "teal", calibration_tokens=1024, progress=False)
    set_budget(model, 1.0)
    return model


@pytest.mark.parametrize("family", ROPE_FAMILIES)
def test_whole_slice_equals_the_dense_path(family):
    decoder = LeanDecoder(tiny_model(family))
    x = torch.randn(decoder.runner.layers[0].ffn.view.d_model, generator=torch.Generator().manual_seed(0))
    for layer, path in zip(decoder.runner.layers, sliced_paths(decoder, 1.0), strict=True):
        torch.testing.assert_close(path(x).clone(), layer.ffn_token(x).clone(), rtol=0, atol=0)


def test_whole_slice_of_a_converted_model_equals_its_budget_one_path(teal):
    decoder = LeanDecoder(teal)
    x = torch.randn(teal.config.hidden_size, generator=torch.Generator().manual_seed(1))
    for layer, path in zip(decoder.runner.layers, sliced_paths(decoder, 1.0), strict=True):
        torch.testing.assert_close(path(x).clone(), layer.ffn_token(x).clone(), rtol=1e-6, atol=1e-6)


@settings(max_examples=10, deadline=None)
@given(fraction=st.floats(0.01, 1.0), seed=st.integers(0, 1000))
def test_a_slice_is_the_ffn_of_the_first_neurons(fraction, seed):
    model = tiny_model("qwen2")  # biases on q/k/v, none on the FFN; Llama-style GLU
    decoder = LeanDecoder(model)
    views = [ffn_view(layer.mlp, architecture_of(model)) for layer in decoder_layers(model)]
    x = torch.randn(1, views[0].d_model, generator=torch.Generator().manual_seed(seed))
    for view, path in zip(views, sliced_paths(decoder, fraction), strict=True):
        k = min(max(round(fraction * view.d_ff), 1), view.d_ff)
        hidden = view.act(x @ view.gate[:k].T) * (x @ view.up[:k].T)
        torch.testing.assert_close(path(x[0]).clone(), (hidden @ view.down[:, :k].T)[0], rtol=1e-5, atol=1e-6)


def test_no_ceiling_without_a_native_width_path(tokenizer):
    assert sliced_paths(LeanDecoder(tiny_model("gpt2")), 0.5) is None  # generic decode path
    skip = convert(tiny_model("llama"), tokenizer, "skip", calibration_tokens=1024, progress=False)
    assert sliced_paths(LeanDecoder(skip), 0.5) is None  # skip also skips attention: not a width method


def test_paths_are_restored_even_after_an_error():
    decoder = LeanDecoder(tiny_model("llama"))
    original = [layer.ffn_token for layer in decoder.runner.layers]
    paths = sliced_paths(decoder, 0.5)
    with pytest.raises(RuntimeError), ffn_paths(decoder, paths):
        assert [layer.ffn_token for layer in decoder.runner.layers] == paths
        raise RuntimeError
    assert [layer.ffn_token for layer in decoder.runner.layers] == original


def test_bench_reports_the_ceiling_beside_each_budget(teal, tokenizer):
    result = benchmark(teal, tokenizer, budgets=[0.5], prompt_tokens=8, new_tokens=4, prefill_tokens=16, repeats=1,
                       progress=False, ceiling=True)  # fmt: skip
    (row,) = result["budgets"]
    assert row["ceiling_decode_speedup"] > 0
    plain = benchmark(teal, tokenizer, budgets=[0.5], prompt_tokens=8, new_tokens=4, prefill_tokens=16, repeats=1,
                      progress=False)  # fmt: skip
    assert "ceiling_decode_speedup" not in plain["budgets"][0]
