"""The quantized runtime against its specification, dequantize-then-fp32 in PyTorch: block matvecs on random and
real weights, the whole-model forward against HF's on the dequantized weights, the KV cache against one pass.

Tolerances: with fp32 activations a kernel differs from dequantize-then-fp32 only in summation order (relative
1e-5 of Σ|w·x|). With int8 activations each input moves by at most half its block's step amax/127, so a row
differs by at most `matvec_error_bound` (Σ_b step_b/2 · Σ|w_b|) plus the same fp32 rounding.
"""

import shutil

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM, LlamaConfig

from conftest import ROPE_FAMILIES, tiny_model
from ponder.errors import PonderError
from ponder.quant import FORMATS, QuantDecoder, QuantTensor, quantize_model
from ponder.quant.formats import quantize
from ponder.quant.runtime import library, library_for, matmul, matvec_error_bound, quantize_activations

ALL_FORMATS = list(FORMATS)


def _weight(fmt: str, rows: int, cols: int, seed: int) -> tuple[QuantTensor, torch.Tensor]:
    """A random weight in `fmt` and the fp32 values it stands for."""
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(rows, cols, generator=generator) * torch.rand(rows, 1, generator=generator)
    tensor = QuantTensor(FORMATS[fmt], (rows, cols), quantize(values, FORMATS[fmt]))
    return tensor, tensor.dequantize()


def _rounding(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return 1e-5 * (x.abs() @ weight.abs().T) + 1e-6  # [T, N]: fp32 summation-order slack


@settings(max_examples=40, deadline=None)
@given(
    fmt=st.sampled_from(ALL_FORMATS),
    rows=st.integers(1, 70),
    blocks=st.integers(1, 8),
    tokens=st.integers(1, 3),
    threads=st.integers(1, 2),
    seed=st.integers(0, 2**16),
)
def test_matvec_equals_dequantize_then_fp32(fmt, rows, blocks, tokens, threads, seed):
    weight, dense = _weight(fmt, rows, 32 * blocks, seed)
    x = torch.randn(tokens, 32 * blocks, generator=torch.Generator().manual_seed(seed + 1)) * 3
    reference = x.double() @ dense.double().T  # [T, N]
    exact = matmul(weight, x, activations="fp32", threads=threads)
    assert ((exact - reference).abs() <= _rounding(dense, x)).all()
    fast = matmul(weight, x, activations="int8", threads=threads)
    bound = _rounding(dense, x) + (0 if fmt == "f32" else matvec_error_bound(dense, x))
    assert ((fast - reference).abs() <= bound).all()


@pytest.mark.parametrize("fmt", FORMATS)
def test_int8_matvec_is_the_integer_dot_of_the_quantized_input(fmt):
    """Beyond the bound: the int8 path computes exactly dequantized-weight · dequantized-input (fp32 rounding)."""
    weight, dense = _weight(fmt, 50, 192, seed=3)
    x = torch.randn(192) * 2
    scales, values = quantize_activations(x)
    x_q = (scales[:, None] * values.reshape(-1, 32).float()).reshape(-1)  # [K]: the input the kernel sees
    y = matmul(weight, x[None], activations="int8")[0]
    x_seen = x if fmt == "f32" else x_q
    reference = dense.double() @ x_seen.double()
    assert torch.allclose(y.double(), reference, rtol=0, atol=float(1e-5 * (dense.abs() @ x.abs()).max()))


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0", "q4_1"])
@pytest.mark.parametrize("blocks", [1, 3, 6])
def test_one_token_rows_four_at_a_time_equal_rows_one_at_a_time(fmt, blocks):
    """A one-token matvec runs four interleaved rows a call; each row's value is the lone row's, bit for bit."""
    weight, _ = _weight(fmt, 23, 32 * blocks, seed=blocks)
    x = torch.randn(1, 32 * blocks) * 2
    together = matmul(weight, x, activations="int8", threads=2)[0]
    rows = weight.data.reshape(23, -1)
    alone = torch.cat([matmul(QuantTensor(weight.format, (1, 32 * blocks), rows[r : r + 1]), x)[0] for r in range(23)])
    assert torch.equal(together, alone)


def test_activation_quantization_matches_the_numpy_rule():
    x = torch.randn(256) * torch.logspace(-3, 2, 256)
    scales, values = quantize_activations(x)
    blocks = x.numpy().reshape(-1, 32)
    d = np.abs(blocks).max(axis=1) / 127
    assert np.allclose(scales.numpy(), d, rtol=1e-7)
    expected = np.rint(blocks / d[:, None])  # ties at half-steps may round either way: at most one level
    assert np.abs(values.numpy().reshape(-1, 32) - expected).max() <= 1
    assert (values.numpy().reshape(-1, 32) == expected).mean() > 0.99


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")
@pytest.mark.parametrize("march", ["x86-64", "haswell"])
def test_portable_builds_compute_the_same_integer_sums(march):
    """The scalar build (no SIMD) and the AVX2 build (no VNNI) agree with this machine's build."""
    flags = ("-O2", f"-march={march}", "-fopenmp", "-shared", "-fPIC", "-std=c11")
    other = library_for(flags)
    assert other.pq_simd_level() == (0 if march == "x86-64" else 2)
    x = torch.randn(2, 128)
    for fmt in FORMATS:
        weight, dense = _weight(fmt, 33, 128, seed=5)
        for activations in ("int8", "fp32"):
            ours = matmul(weight, x, activations=activations)
            theirs = matmul(weight, x, activations=activations, lib=other)
            assert ((ours - theirs).abs() <= 2 * _rounding(dense, x)).all(), (fmt, activations)


def test_this_machine_builds_its_widest_path():
    level = library().pq_simd_level()
    with open("/proc/cpuinfo") as f:
        flags = f.read()
    assert level == (3 if "avx512_vnni" in flags and "avx512vl" in flags else 2 if " avx2" in flags else 0)


def _small_llama(seed: int = 0):
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)  # fmt: skip
    return AutoModelForCausalLM.from_config(config).eval()


def _dequantized_hf(model, quantized):
    """The HF model with the quantized tensors' fp32 values: the specification the runtime runs."""
    reference = type(model)(model.config).eval()
    state = {name: t.dequantize() for name, t in quantized.tensors.items()}
    reference.load_state_dict(state, strict=False)
    reference.tie_weights()
    return reference


@pytest.mark.parametrize("fmt", ["q4_1", "q8_0", "q4_0"])
def test_forward_equals_hf_on_dequantized_weights(fmt):
    model = _small_llama()
    quantized = quantize_model(model, fmt)
    reference = _dequantized_hf(model, quantized)
    ids = torch.randint(0, 256, (1, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(ids).logits[0]  # [T, V]
    exact = QuantDecoder(quantized, activations="fp32", threads=2, max_len=64, chunk=16).logits(ids)
    assert (exact - expected).abs().max() < 1e-4
    fast = QuantDecoder(quantized, threads=2, max_len=64, chunk=16).logits(ids)
    # int8 activations through 2 layers and the head: a few per mille of the logits' scale here
    assert (fast - expected).abs().max() < 0.02 * expected.abs().max()
    for activations in ("fp32", "int8"):
        decoder = QuantDecoder(quantized, activations=activations, threads=1, max_len=64)
        out = decoder.generate(ids[:, :8], 24)
        with torch.no_grad():
            hf = reference.generate(ids[:, :8], max_new_tokens=24, do_sample=False, eos_token_id=None)
        if activations == "fp32":
            assert torch.equal(out, hf)
        else:  # int8 rounding may flip a near-tie of a random model: most tokens agree
            assert (out == hf).float().mean() > 0.5


@pytest.mark.parametrize("family", ROPE_FAMILIES)
def test_fp32_weights_run_every_rope_family_as_hf(family):
    """f32 weights and fp32 activations: the runtime is HF's forward (Qwen2's biases, Qwen3's q/k norms)."""
    model = tiny_model(family)
    quantized = quantize_model(model, "f32")
    ids = torch.randint(0, 256, (1, 20), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = model(ids).logits[0]
    got = QuantDecoder(quantized, weights="f32", activations="fp32", threads=1, max_len=32).logits(ids)
    assert (got - expected).abs().max() < 1e-4


@pytest.mark.parametrize(
    ("fmt", "activations", "shape"),
    [("q4_1", "int8", "even"), ("q4_1", "fp32", "even"), ("q4_1", "int8", "odd"), ("q4_0", "int8", "odd"),
     ("q8_0", "int8", "odd")],
)  # fmt: skip
def test_kv_cache_decode_equals_one_pass_and_chunks_do_not_matter(fmt, activations, shape):
    """Token groups (T > 1) and four-row one-token steps sum every row in the same order: the same logits, bit for
    bit, also with odd block counts and row counts that are not multiples of four ("odd")."""
    model = _small_llama(1)
    if shape == "odd":
        torch.manual_seed(1)
        config = LlamaConfig(vocab_size=250, hidden_size=96, intermediate_size=160, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)  # fmt: skip
        model = AutoModelForCausalLM.from_config(config).eval()
    quantized = quantize_model(model, fmt)
    ids = torch.randint(0, 250, (30,), generator=torch.Generator().manual_seed(4))
    one_pass = QuantDecoder(quantized, activations=activations, threads=2, max_len=32, chunk=64).logits(ids)
    chunked = QuantDecoder(quantized, activations=activations, threads=1, max_len=32, chunk=7).logits(ids)
    decoder = QuantDecoder(quantized, activations=activations, threads=2, max_len=32)
    stepped = torch.stack([decoder.forward(ids[i : i + 1]) for i in range(30)])
    assert torch.equal(one_pass, chunked) and torch.equal(one_pass, stepped)  # same sums per row and token
    decoder.reset()
    assert decoder.next_token(ids) == int(one_pass[-1].argmax())


def test_window_nll_is_the_cross_entropy_of_the_window():
    model = _small_llama(2)
    quantized = quantize_model(model, "q8_0")
    reference = _dequantized_hf(model, quantized)
    window = torch.randint(0, 256, (33,), generator=torch.Generator().manual_seed(5))
    nll, count = QuantDecoder(quantized, activations="fp32", threads=1, max_len=64, chunk=8).window_nll(window)
    with torch.no_grad():
        logits = reference(window[None]).logits[0, :-1]
    expected = torch.nn.functional.cross_entropy(logits, window[1:], reduction="sum")
    assert count == 32 and nll == pytest.approx(float(expected), rel=1e-5)


def test_bad_inputs_are_refused():
    quantized = quantize_model(_small_llama(), "q4_0")
    decoder = QuantDecoder(quantized, threads=1, max_len=8)
    with pytest.raises(PonderError, match="exceeds the decoder's max_len=8"):
        decoder.forward(torch.zeros(9, dtype=torch.long))
    with pytest.raises(PonderError, match=r"token ids must lie in \[0, 256\)"):
        decoder.forward(torch.tensor([256]))
    with pytest.raises(PonderError, match="unknown activations 'int4'"):
        QuantDecoder(quantized, activations="int4")
    with pytest.raises(PonderError, match="one sequence"):
        decoder.generate(torch.zeros(2, 3, dtype=torch.long), 2)


@pytest.mark.real
def test_default_model_q4_1_greedy_tokens_equal_the_fp32_path():
    """The embedded GGUF's own Q4_1 blocks, run natively with fp32 activations, give the fp32 lean decoder's
    greedy tokens (on transformers' dequantized copy of the same file) for 64 tokens of the benchmark prompt."""
    from ponder.inference import LeanDecoder
    from ponder.models import DEFAULT_MODEL, load
    from ponder.timing import prompt_ids

    model, tokenizer = load(DEFAULT_MODEL)
    ids = prompt_ids(tokenizer, 64)
    expected = LeanDecoder(model, max_len=192).generate(ids, 64)
    decoder = QuantDecoder(DEFAULT_MODEL, weights="q4_1", activations="fp32", threads=2, max_len=192)
    assert decoder.formats["model.layers.0.mlp.down_proj.weight"].name == "q4_1"
    assert torch.equal(decoder.generate(ids, 64), expected)
