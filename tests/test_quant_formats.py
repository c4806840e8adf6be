"""Weight formats and files of the quantized runtime: shapes checked, saves reload bit for bit, bad files refused,
the embedded GGUF read as its own blocks."""

import json

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, GGUFReader
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import tiny_model
from ponder.errors import PonderError
from ponder.models import DEFAULT_MODEL
from ponder.models.load import resolve
from ponder.quant import FORMATS, QUANTIZED, QuantTensor, get_format, quantize_model, save_quantized
from ponder.quant.formats import check_shape, dequantize, quantize
from ponder.quant.weights import MANIFEST, QUANT_FILE, load_quantized, read_gguf


@settings(max_examples=20, deadline=None)
@given(
    fmt=st.sampled_from(QUANTIZED),
    rows=st.integers(1, 9),
    blocks=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_block_rows_round_trip_within_half_a_step(fmt, rows, blocks, seed):
    weight = torch.randn(rows, 32 * blocks, generator=torch.Generator().manual_seed(seed))
    f = get_format(fmt)
    data = quantize(weight, f)
    assert data.dtype == torch.uint8 and tuple(data.shape) == (rows, blocks * f.block_bytes)
    values = dequantize(data, f, weight.shape[1])
    per_block = weight.reshape(rows, blocks, 32)
    # Each weight is within half a step of its block's grid (q4_0: a whole step at +amax, which its grid of
    # -8..7 steps clips), plus the fp16 rounding (2^-11 relative) of the scale times the top level, and of the min.
    amax, low = per_block.abs().amax(-1), per_block.amin(-1)
    step, grid, levels = {
        "q8_0": (amax / 127, 0.5, 127),
        "q4_0": (amax / 8, 1.0, 8),
        "q4_1": ((per_block.amax(-1) - low) / 15, 0.5, 15),
    }[fmt]
    fp16 = 2.0**-11
    bound = step * (grid + levels * fp16) + (low.abs() * fp16 if fmt == "q4_1" else 0) + 1e-6
    error = (values - weight).abs().reshape(rows, blocks, 32).amax(-1)
    assert (error <= bound).all()


def test_dims_not_multiple_of_32_name_dims_and_formats():
    with pytest.raises(PonderError, match=r"7x48: q4_1 needs .* multiple of 32; use --weights f32"):
        check_shape("w", (7, 48), FORMATS["q4_1"])
    check_shape("w", (7, 48), FORMATS["f32"])
    with pytest.raises(PonderError, match="unknown weight format 'q5_0': use one of f32, q8_0, q4_0, q4_1"):
        get_format("q5_0")


def test_a_model_whose_hidden_size_does_not_block_is_refused():
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(vocab_size=64, hidden_size=48, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2)  # fmt: skip
    with pytest.raises(PonderError, match=r"48: q8_0 needs an input dimension that is a multiple of 32"):
        quantize_model(AutoModelForCausalLM.from_config(config), "q8_0")


def test_data_of_the_wrong_size_is_refused():
    with pytest.raises(PonderError, match=r"needs torch.uint8 data \[2, 40\], got torch.uint8 \[2, 39\]"):
        QuantTensor(FORMATS["q4_1"], (2, 64), torch.zeros(2, 39, dtype=torch.uint8))


def test_projections_take_the_format_norms_and_embedding_stay():
    model = quantize_model(tiny_model("llama"), "q4_0")
    assert model.tensors["model.layers.1.mlp.down_proj.weight"].format.name == "q4_0"
    assert model.tensors["model.layers.0.self_attn.q_proj.weight"].format.name == "q4_0"
    assert model.tensors["lm_head.weight"].format.name == "q4_0"
    assert model.tensors["model.embed_tokens.weight"].format.name == "f32"
    assert model.tensors["model.layers.0.input_layernorm.weight"].format.name == "f32"


@pytest.mark.parametrize("fmt", QUANTIZED)
def test_save_then_load_is_bit_exact(tmp_path, tokenizer, fmt):
    model = quantize_model(tiny_model("qwen2"), fmt)  # qwen2: q/k/v biases travel too
    path = save_quantized(model, tmp_path / "q", tokenizer)
    again = load_quantized(path)
    assert again.weights == fmt and set(again.tensors) == set(model.tensors)
    for name, tensor in model.tensors.items():
        other = again.tensors[name]
        assert other.format == tensor.format and other.shape == tensor.shape
        assert torch.equal(other.data, tensor.data), name
    assert (path / "tokenizer.json").exists() and not list(tmp_path.glob(".q.tmp-*"))
    save_quantized(model, path)  # overwrites in place
    assert torch.equal(load_quantized(path).tensors["lm_head.weight"].data, model.tensors["lm_head.weight"].data)


def test_truncated_or_incomplete_files_give_one_line_errors(tmp_path):
    path = save_quantized(quantize_model(tiny_model("llama"), "q8_0"), tmp_path / "q")
    data = (path / QUANT_FILE).read_bytes()
    (path / QUANT_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(PonderError, match="re-create it"):
        load_quantized(path)
    (path / QUANT_FILE).write_bytes(data)
    manifest = json.loads((path / MANIFEST).read_text())
    del manifest["tensors"]["model.layers.1.mlp.up_proj.weight"]
    (path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(PonderError, match="lacks model.layers.1.mlp.up_proj.weight"):
        load_quantized(path)
    manifest["tensors"]["model.layers.1.mlp.up_proj.weight"] = {"format": "q4_1", "shape": [64, 32]}
    (path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(PonderError, match="the file is corrupt"):  # q8_0 bytes declared as q4_1
        load_quantized(path)


def test_unsupported_architecture_is_refused():
    with pytest.raises(PonderError, match="model type 'gpt2' has no quantized runtime"):
        quantize_model(tiny_model("gpt2"), "q8_0")


def test_truncated_gguf_gives_one_line_error(tmp_path):
    _, path = resolve(DEFAULT_MODEL)
    with open(path, "rb") as f:
        head = f.read(2_000_000)
    for size, message in [(2_000_000, r"truncated \(token_embd.weight ends past"), (5_000, "truncated in its header")]:
        (tmp_path / "short.gguf").write_bytes(head[:size])
        with pytest.raises(PonderError, match=message):
            read_gguf(tmp_path / "short.gguf")
    (tmp_path / "short.gguf").write_bytes(b"GGML" + head[4:5_000])
    with pytest.raises(PonderError, match="not a GGUF file"):
        read_gguf(tmp_path / "short.gguf")


@pytest.mark.real
def test_embedded_gguf_loads_its_own_blocks_and_dequantizes_as_transformers_does():
    from ponder.models.load import load

    _, path = resolve(DEFAULT_MODEL)
    model = read_gguf(path, "q4_1")
    reader = GGUFReader(str(path))
    raw = {t.name: t for t in reader.tensors}
    # Projections are the file's bytes (Q/K rows reordered whole, never requantized): V and FFN byte-identical.
    up = model.tensors["model.layers.3.mlp.up_proj.weight"]
    assert up.format.name == "q4_1" and np.array_equal(up.data.numpy(), np.asarray(raw["blk.3.ffn_up.weight"].data))
    q = model.tensors["model.layers.3.self_attn.q_proj.weight"].data.numpy()
    assert sorted(map(bytes, q)) == sorted(map(bytes, np.asarray(raw["blk.3.attn_q.weight"].data)))
    assert model.head is model.tensors["model.embed_tokens.weight"] and model.head.format.name == "q8_0"
    assert raw["token_embd.weight"].tensor_type == GGMLQuantizationType.Q8_0
    hf, _ = load(DEFAULT_MODEL)
    state = hf.state_dict()
    for name, tensor in model.tensors.items():  # every tensor, dequantized, is transformers' fp32 copy exactly
        assert torch.equal(tensor.dequantize(), state[name]), name
