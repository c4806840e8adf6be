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


def _random_q4_k(superblocks: int, seed: int) -> np.ndarray:
    """Valid Q4_K super-blocks: fp16 d and dmin of a real file's magnitude, random 6-bit scales and codes."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(superblocks, 144), dtype=np.uint8)
    blocks[:, 0:2] = rng.uniform(1e-3, 2e-2, (superblocks, 1)).astype(np.float16).view(np.uint8)
    blocks[:, 2:4] = rng.uniform(1e-3, 2e-2, (superblocks, 1)).astype(np.float16).view(np.uint8)
    return blocks


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 6), superblocks=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_q4_k_repacks_into_q4_1_within_fp16_rounding_of_its_scales(rows, superblocks, seed):
    from gguf.quants import Q4_K

    from ponder.quant.nearest import q4_k_as_q4_1

    raw = _random_q4_k(rows * superblocks, seed)
    cols = 256 * superblocks
    reference = dequantize(torch.from_numpy(raw.reshape(rows, -1)), _k_format(GGMLQuantizationType.Q4_K), cols)
    blocks = q4_k_as_q4_1(raw, rows)
    assert tuple(blocks.shape) == (rows, cols // 32 * 20)
    values = dequantize(blocks, FORMATS["q4_1"], cols)
    # Per 32-weight sub-block: |error| <= 15·2^-11·scale + 2^-11·min (each written in fp16), plus fp32 rounding.
    d = raw[:, 0:2].copy().view(np.float16).astype(np.float32)
    dmin = raw[:, 2:4].copy().view(np.float16).astype(np.float32)
    sc, mn = Q4_K.get_scale_min(raw[:, 4:16])
    bound = 2.0**-11 * (15 * d * sc + dmin * mn) * 1.01 + 1e-7  # [rows·superblocks, 8]
    error = (values - reference).abs().reshape(-1, 8, 32).amax(-1)
    assert bool((error <= torch.from_numpy(bound)).all())


def _k_format(ggml: GGMLQuantizationType):
    """A Format standing for a GGUF K-quant, so the shared dequantize reads it (the runtime has no kernels for it)."""
    from ponder.quant.formats import Format

    return Format(ggml.name.lower(), -1, ggml)


def test_a_k_quant_gguf_runs_its_projections_in_the_nearest_format(tmp_path):
    """A Q4_K_M-like file (Q4_K gate/up, Q6_K down, Q8_0 attention): Q4_K loads as q4_1 keeping its codes, Q6_K
    as q8_0, with a note; asking --weights quantizes everything to that format instead."""
    import gguf

    from ponder.quant import QuantDecoder

    hidden, ffn, layers, vocab = 256, 512, 1, 64
    path = tmp_path / "tiny-q4_k_m.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(layers)
    writer.add_context_length(128)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    rng = np.random.default_rng(0)
    kv = hidden // 2

    def q8(rows: int, cols: int) -> np.ndarray:
        return gguf.quants.quantize(
            rng.standard_normal((rows, cols)).astype(np.float32) * 0.05, GGMLQuantizationType.Q8_0
        )

    q4_k = {"ffn_gate": _random_q4_k(ffn * hidden // 256, 1), "ffn_up": _random_q4_k(ffn * hidden // 256, 2)}
    down = rng.integers(0, 256, size=(hidden * ffn // 256, 210), dtype=np.uint8)  # Q6_K: fp16 d in its last 2 bytes
    down[:, 208:210] = rng.uniform(1e-4, 1e-3, (len(down), 1)).astype(np.float16).view(np.uint8)
    tensors = {
        "token_embd.weight": (q8(vocab, hidden), GGMLQuantizationType.Q8_0),
        "output_norm.weight": (np.ones(hidden, np.float32), GGMLQuantizationType.F32),
        "blk.0.attn_norm.weight": (np.ones(hidden, np.float32), GGMLQuantizationType.F32),
        "blk.0.ffn_norm.weight": (np.ones(hidden, np.float32), GGMLQuantizationType.F32),
        "blk.0.attn_q.weight": (q8(hidden, hidden), GGMLQuantizationType.Q8_0),
        "blk.0.attn_k.weight": (q8(kv, hidden), GGMLQuantizationType.Q8_0),
        "blk.0.attn_v.weight": (q8(kv, hidden), GGMLQuantizationType.Q8_0),
        "blk.0.attn_output.weight": (q8(hidden, hidden), GGMLQuantizationType.Q8_0),
        "blk.0.ffn_gate.weight": (q4_k["ffn_gate"].reshape(ffn, -1), GGMLQuantizationType.Q4_K),
        "blk.0.ffn_up.weight": (q4_k["ffn_up"].reshape(ffn, -1), GGMLQuantizationType.Q4_K),
        "blk.0.ffn_down.weight": (down.reshape(hidden, -1), GGMLQuantizationType.Q6_K),
    }
    for name, (data, kind) in tensors.items():
        writer.add_tensor(name, data, raw_dtype=kind)  # block types: gguf takes the logical shape from the bytes
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    model = read_gguf(path)
    up = model.tensors["model.layers.0.mlp.up_proj.weight"]
    assert up.format.name == "q4_1" and model.weights == "q4_1"
    assert model.notes and "Q4_K -> q4_1" in model.notes[0] and "Q6_K -> q8_0" in model.notes[0]
    converted = model.tensors["model.layers.0.mlp.down_proj.weight"]
    six_bit = dequantize(torch.from_numpy(down.reshape(hidden, -1)), _k_format(GGMLQuantizationType.Q6_K), ffn)
    # Half a step of each q8_0 block, plus its fp16 scale's rounding (2^-11) at the top code 127.
    step = six_bit.reshape(hidden, -1, 32).abs().amax(-1, keepdim=True) / 127
    assert converted.format.name == "q8_0"
    assert bool(
        ((converted.dequantize() - six_bit).reshape(hidden, -1, 32).abs() <= (0.5 + 127 * 2**-11) * step + 1e-6).all()
    )
    reference = dequantize(
        torch.from_numpy(q4_k["ffn_up"].reshape(ffn, -1)), _k_format(GGMLQuantizationType.Q4_K), hidden
    )
    assert torch.allclose(up.dequantize(), reference, rtol=0, atol=2**-10 * float(reference.abs().max()))
    asked = read_gguf(path, "q8_0")
    assert asked.notes == [] and asked.tensors["model.layers.0.mlp.up_proj.weight"].format.name == "q8_0"
    decoder = QuantDecoder(model, max_len=16, chunk=4)
    assert torch.isfinite(decoder.forward(torch.arange(5))).all()
