import os
import shutil

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import GenerationConfig

from conftest import FAMILIES, ROPE_FAMILIES, VOCAB, tiny_model
from ponder.inference import LeanDecoder
from ponder.kernels import native
from ponder.stats import decode_weight_bytes


def hf_greedy(model, ids, new_tokens):
    # eos_token_id=[]: never stop and never suppress EOS, exactly what LeanDecoder does without an EOS.
    config = GenerationConfig(max_new_tokens=new_tokens, do_sample=False, eos_token_id=[], pad_token_id=1)
    with torch.no_grad():
        return model.generate(ids, generation_config=config)


def test_native_path_for_llama_style_families(family):
    assert LeanDecoder(tiny_model(family)).native == (family in ROPE_FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_lean_decode_equals_hf_generate(family):
    model = tiny_model(family, seed=1)
    ids = torch.randint(2, VOCAB, (1, 12), generator=torch.Generator().manual_seed(0))
    assert torch.equal(LeanDecoder(model).generate(ids, 24), hf_greedy(model, ids, 24))


@settings(max_examples=12, deadline=None)
@given(
    family=st.sampled_from(ROPE_FAMILIES),
    prompt_len=st.integers(1, 40),
    batch=st.integers(1, 3),
    seed=st.integers(0, 10_000),
)
def test_lean_decode_equals_hf_generate_property(family, prompt_len, batch, seed):
    model = tiny_model(family, seed=seed % 7)
    ids = torch.randint(2, VOCAB, (batch, prompt_len), generator=torch.Generator().manual_seed(seed))
    assert torch.equal(LeanDecoder(model).generate(ids, 6), hf_greedy(model, ids, 6))


@pytest.mark.parametrize("family", FAMILIES)
def test_cached_steps_equal_full_forward(family):
    """Logits from prefill + one-token steps (KV cache) equal one forward over the whole sequence."""
    model = tiny_model(family)
    ids = torch.randint(2, VOCAB, (2, 20), generator=torch.Generator().manual_seed(3))
    runner = LeanDecoder(model).runner
    with torch.no_grad():
        full = model(ids).logits  # [B, T, V]
        runner.reset(2)
        stepped = [runner.forward(ids[:, :8])]
        stepped += [runner.forward(ids[:, t : t + 1]) for t in range(8, 20)]
    torch.testing.assert_close(torch.stack(stepped, 1), full[:, 7:], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", ROPE_FAMILIES)
def test_chunk_after_prefix_equals_full_forward(family):
    model = tiny_model(family)
    ids = torch.randint(2, VOCAB, (1, 30), generator=torch.Generator().manual_seed(4))
    runner = LeanDecoder(model).runner
    with torch.no_grad():
        full = model(ids).logits
        runner.reset(1)
        runner.forward(ids[:, :10])
        last = runner.forward(ids[:, 10:])  # a 20-token chunk over a 10-token prefix
    torch.testing.assert_close(last, full[:, -1], rtol=1e-4, atol=1e-5)


def test_eos_stops_and_pads_like_hf():
    model = tiny_model("llama", seed=2)
    ids = torch.randint(2, VOCAB, (1, 5), generator=torch.Generator().manual_seed(0))
    free = LeanDecoder(model).generate(ids, 10)
    eos = int(free[0, 8])  # pretend the 4th generated token is EOS
    out = LeanDecoder(model).generate(ids, 10, eos_token_id=eos)
    first = (out[0, 5:] == eos).nonzero()[0].item()
    assert out.shape[1] == 5 + first + 1
    assert torch.equal(out[0, : 5 + first + 1], free[0, : 5 + first + 1])


def test_too_long_sequence_is_refused():
    decoder = LeanDecoder(tiny_model("llama"), max_len=16)
    with pytest.raises(ValueError, match="max_len=16"):
        decoder.generate(torch.zeros(1, 10, dtype=torch.long), 10)


@pytest.mark.skipif(
    os.environ.get("PONDER_NATIVE") == "0" or not (os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")),
    reason="no C compiler (or PONDER_NATIVE=0): the PyTorch path is the design here",
)
def test_native_kernels_build_where_a_compiler_exists():
    """A C source that fails to compile must fail a test, not silently send every other test down the PyTorch
    path (the kernel tests skip themselves without the library)."""
    from ponder.kernels import native

    assert native.library() is not None


@pytest.mark.skipif(native.library() is None, reason="no C compiler: no screened head")
def test_weight_bytes_count_the_screened_head_as_it_reads():
    """`ponder bench`'s bytes per token: the greedy step reads the head's int8 copy with a scale and a bound per row,
    not its fp32 weight."""
    model = tiny_model("llama")
    screen = LeanDecoder(model).runner.greedy_head
    rows, cols = model.lm_head.weight.shape
    assert screen.bytes_read() == rows * cols + 2 * rows * 4
    saved = decode_weight_bytes(model) - decode_weight_bytes(model, head_bytes=screen.bytes_read())
    assert saved == rows * cols * 4 - screen.bytes_read()


@pytest.mark.skipif(native.library() is None, reason="no C compiler: no screened head")
def test_the_full_head_makes_the_same_tokens():
    model = tiny_model("llama")
    ids = torch.randint(0, VOCAB, (1, 7), generator=torch.Generator().manual_seed(3))
    full = LeanDecoder(model, max_len=64, screen_head=False)
    assert full.runner.greedy_head is None
    assert torch.equal(full.generate(ids, 20), LeanDecoder(model, max_len=64).generate(ids, 20))
