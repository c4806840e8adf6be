"""Adaptive methods in the quantized runtime against their specification on the dequantized weights.

The sparse FFN kind is checked one layer at a time through `pq_ffn` (the forward's own code): its output equals
the dense FFN restricted to the neurons it reports active, computed in float64 from the weights' fp32 values and the
input the kernel sees (the int8 blocks' values with int8 activations), and those neurons are the ones the policy
picks (|act(gate)| above the threshold, or the top k), up to the gate's own rounding.
"""

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, LlamaConfig

from ponder.errors import PonderError
from ponder.methods.base import budget_grid
from ponder.quant import QuantDecoder, QuantTensor, quantize_model
from ponder.quant.adaptive import AdaptiveQuantDecoder, cats_neuron_fraction, ffn_call, neuron_major, requantize_error
from ponder.quant.formats import quantize
from ponder.quant.runtime import quantize_activations

FORMATS = ["q8_0", "q4_0", "q4_1"]


def _llama(hidden: int = 64, ffn: int = 128, seed: int = 0):
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=256, hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128)  # fmt: skip
    return AutoModelForCausalLM.from_config(config).eval()


def _converted(directory, model, method: str = "cats", seed: int = 0):
    """A converted directory as `ponder convert` writes it, thresholds from |act(gate)| quantiles on random inputs
    (the calibration's rule, without the calibration text)."""
    directory.mkdir(parents=True, exist_ok=True)
    grid = budget_grid(0.4)
    x = torch.randn(256, model.config.hidden_size, generator=torch.Generator().manual_seed(seed))
    state = {}
    for i, layer in enumerate(model.model.layers):
        with torch.no_grad():
            act = torch.nn.functional.silu(layer.mlp.gate_proj(layer.post_attention_layernorm(x))).abs()
        fractions = torch.tensor([cats_neuron_fraction(float(b)) for b in grid])
        thresholds = torch.quantile(act.reshape(-1), 1 - fractions)
        thresholds[-1] = -1.0
        state[f"layers.{i}.budget_grid"], state[f"layers.{i}.thresholds"] = grid.clone(), thresholds.contiguous()
    save_file(state, str(directory / "ponder_state.safetensors"))
    config = {"method": method, "config": {"min_budget": 0.4}, "budget": 1.0, "base_model": "unused"}
    (directory / "ponder_config.json").write_text(json.dumps(config))
    return directory


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    model = _llama()
    return model, _converted(tmp_path_factory.mktemp("cats") / "cats", model)


@pytest.mark.parametrize("fmt", FORMATS)
def test_budget_one_is_the_dense_quantized_path(small, fmt):
    model, directory = small
    quantized = quantize_model(model, fmt)
    ids = torch.randint(0, 256, (1, 24), generator=torch.Generator().manual_seed(2))
    dense = QuantDecoder(quantized, threads=2, max_len=64, chunk=8)
    for mode in ("threshold", "count"):
        adaptive = AdaptiveQuantDecoder(directory, base=quantized, budget=1.0, mode=mode, threads=2, max_len=64,
                                        chunk=8)  # fmt: skip
        dense.reset()
        assert torch.equal(adaptive.logits(ids), dense.logits(ids))
        assert torch.equal(adaptive.generate(ids[:, :4], 12), dense.generate(ids[:, :4], 12))
        assert adaptive.ffn_compute == 1.0


def _reference(decoder, layer: int, x: torch.Tensor, activations: str):
    """(the inputs the kernel's matvecs see [T, D], gate activations [T, F], up [T, F], neuron-major down [F, D])."""
    tensors = decoder.model.tensors
    p = f"model.layers.{layer}."
    norm = tensors[p + "post_attention_layernorm.weight"].dequantize().double()
    xd = x.double()
    xn = (xd * torch.rsqrt(xd.pow(2).mean(-1, keepdim=True) + decoder.model.config.rms_norm_eps) * norm).float()
    if activations == "int8":
        seen = []
        for row in xn:
            scales, values = quantize_activations(row)
            seen.append((scales[:, None] * values.reshape(-1, 32).float()).reshape(-1))
        xn = torch.stack(seen)
    gate = xn.double() @ tensors[p + "mlp.gate_proj.weight"].dequantize().double().T
    up = xn.double() @ tensors[p + "mlp.up_proj.weight"].dequantize().double().T
    return torch.nn.functional.silu(gate), up, decoder.down_t[layer].dequantize().double()


@settings(max_examples=24, deadline=None)
@given(
    fmt=st.sampled_from(FORMATS),
    hidden_blocks=st.integers(1, 8),
    ffn_blocks=st.integers(1, 5),
    tokens=st.integers(1, 5),
    threads=st.integers(1, 2),
    activations=st.sampled_from(["int8", "fp32"]),
    budget=st.floats(0.4, 0.99),
    mode=st.sampled_from(["threshold", "count"]),
    seed=st.integers(0, 2**16),
)
def test_sparse_kernel_is_the_dense_ffn_on_its_active_neurons(
    tmp_path_factory, fmt, hidden_blocks, ffn_blocks, tokens, threads, activations, budget, mode, seed
):
    model = _llama(32 * hidden_blocks, 32 * ffn_blocks, seed)
    directory = _converted(tmp_path_factory.mktemp("p") / "cats", model, seed=seed)
    decoder = AdaptiveQuantDecoder(directory, base=quantize_model(model, fmt), budget=budget, mode=mode,
                                   activations=activations, threads=threads, max_len=8, chunk=8)  # fmt: skip
    x = torch.randn(tokens, model.config.hidden_size, generator=torch.Generator().manual_seed(seed + 1)) * 2
    out, active, counts = ffn_call(decoder, 0, x)
    act, up, down_t = _reference(decoder, 0, x, activations)
    F = model.config.intermediate_size
    tolerance = 1e-4 * act.abs().amax(-1, keepdim=True) + 1e-6  # [T, 1]: the gate's fp32 rounding
    layer = decoder._layers[0]
    for t in range(tokens):
        ids = active[t, : counts[t]].long()
        chosen = torch.zeros(F, dtype=torch.bool)
        chosen[ids] = True
        magnitude = act[t].abs()
        if mode == "count":
            assert counts[t] == round(cats_neuron_fraction(budget) * F)
            if chosen.any() and (~chosen).any():
                assert magnitude[chosen].min() >= magnitude[~chosen].max() - tolerance[t]
        else:
            assert (magnitude[chosen] > layer.threshold - tolerance[t]).all()
            assert (magnitude[~chosen] <= layer.threshold + tolerance[t]).all()
        expected = x[t].double() + (act[t, ids] * up[t, ids]) @ down_t[ids]
        scale = ((act[t] * up[t]).abs() @ down_t.abs()).max() + x[t].abs().max()
        assert (out[t].double() - expected).abs().max() <= 1e-5 * scale + 1e-6


def test_fixed_count_spends_exactly_its_count_and_the_counter_follows(small):
    model, directory = small
    quantized = quantize_model(model, "q4_1")
    ids = torch.randint(0, 256, (30,), generator=torch.Generator().manual_seed(4))
    F = model.config.intermediate_size
    for budget in (0.5, 0.75):
        decoder = AdaptiveQuantDecoder(directory, base=quantized, budget=budget, mode="count", threads=1, max_len=64)
        decoder.logits(ids)
        k = round(cats_neuron_fraction(budget) * F)
        assert decoder.ffn_compute == pytest.approx((1 + 2 * k / F) / 3, abs=1e-12)
    spent = []
    for budget in (0.45, 0.7, 0.95):  # thresholds: less compute at a lower budget, near what was asked
        decoder = AdaptiveQuantDecoder(directory, base=quantized, budget=budget, threads=1, max_len=64)
        decoder.logits(ids)
        spent.append(decoder.ffn_compute)
        decoder.reset_compute()
        assert decoder.ffn_compute == 1.0
    assert spent == sorted(spent) and spent[-1] < 1.0


def test_budget_changes_between_calls_and_bad_inputs_are_refused(small, tmp_path):
    model, directory = small
    quantized = quantize_model(model, "q8_0")
    decoder = AdaptiveQuantDecoder(directory, base=quantized, threads=1, max_len=64)
    ids = torch.randint(0, 256, (16,), generator=torch.Generator().manual_seed(5))
    full = decoder.logits(ids)
    decoder.reset()
    decoder.set_budget(0.5)
    assert not torch.equal(decoder.logits(ids), full)
    with pytest.raises(PonderError, match="below the lowest"):
        decoder.set_budget(0.2)
    with pytest.raises(PonderError, match="mode"):
        AdaptiveQuantDecoder(directory, base=quantized, mode="sometimes")
    teal = _converted(tmp_path / "teal", model, method="teal")
    with pytest.raises(PonderError, match="runs cats"):
        AdaptiveQuantDecoder(teal, base=quantized)


def test_cli_runs_a_converted_model_on_quantized_weights(tmp_path, saved_model, capsys):
    """eval, bench (budgets and ceiling) and generate take a cats directory with --weights; its base's tokenizer."""
    from ponder.cli import main
    from ponder.data import load_text

    model = AutoModelForCausalLM.from_pretrained(saved_model)
    directory = _converted(tmp_path / "cats", model)
    config = json.loads((directory / "ponder_config.json").read_text())
    (directory / "ponder_config.json").write_text(json.dumps(config | {"base_model": str(saved_model)}))
    text = tmp_path / "t.txt"
    text.write_text(load_text("wikitext2-valid")[:3000])
    argv = ["eval", str(directory), "--weights", "q4_1", "--budget", "0.5", "--data", str(text), "--windows", "1",
            "--window-len", "48", "--json", str(tmp_path / "e.json"), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads((tmp_path / "e.json").read_text())
    assert (result["method"], result["budget"], result["weights"]) == ("cats", 0.5, "q4_1")
    assert 0.34 < result["ffn_compute"] < 0.9
    argv = ["bench", str(directory), "--weights", "q8_0", "--budgets", "1,0.5", "--ceiling", "--repeats", "1",
            "--prompt-tokens", "4", "--new-tokens", "3", "--prefill-tokens", "8", "--json", str(tmp_path / "b.json"),
            "--quiet"]  # fmt: skip
    assert main(argv) == 0
    bench = json.loads((tmp_path / "b.json").read_text())
    assert bench["method"] == "cats" and [row["budget"] for row in bench["budgets"]] == [1.0, 0.5]
    assert {"decode_tok_s", "decode_speedup", "ffn_compute", "ceiling_decode_speedup"} <= set(bench["budgets"][1])
    assert bench["budgets"][0]["ffn_compute"] == 1.0
    assert main(["generate", str(directory), "hello", "--weights", "q4_0", "--max-new-tokens", "3", "--raw"]) == 0
    teal = _converted(tmp_path / "teal", model, method="teal")
    capsys.readouterr()
    assert main(["eval", str(teal), "--weights", "q4_1", "--data", str(text), "--quiet"]) == 2
    assert "runs cats" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["q4_0", "q4_1", "q8_0"])
def test_neuron_major_down_of_a_4_bit_file_is_8_bit(fmt):
    """Requantizing 4-bit blocks along the other axis would round them to 4 bits again: q8_0 keeps them closer."""
    quantized = quantize_model(_llama(), fmt)
    down = quantized.tensors["model.layers.0.mlp.down_proj.weight"]
    down_t = neuron_major(down)
    assert down_t.format.name == "q8_0" and down_t.shape == tuple(reversed(down.shape))
    values = down.dequantize().t().contiguous()
    same_format = QuantTensor(down.format, down_t.shape, quantize(values, down.format))
    ours, theirs = requantize_error(down, down_t)[1], requantize_error(down, same_format)[1]
    assert ours <= theirs and (fmt == "q8_0" or ours < theirs / 4)
