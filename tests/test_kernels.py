"""The C GLU gather kernel against plain PyTorch on random inputs and random active sets (the fused teal and cats
kernels are tested against their methods' reference paths in test_methods.py)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ponder.kernels import native

pytestmark = pytest.mark.skipif(native.library() is None, reason="no C compiler: the PyTorch path is used")

ACTS = {
    "silu": torch.nn.functional.silu,
    "gelu_pytorch_tanh": lambda v: torch.nn.functional.gelu(v, approximate="tanh"),
}


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    share=st.floats(0, 1),
    activation=st.sampled_from(sorted(ACTS)),
    glu=st.booleans(),
    bias=st.booleans(),
)
def test_glu_rows_equals_masked_ffn(seed, share, activation, glu, bias):
    g = torch.Generator().manual_seed(seed)
    F, D = 96, 40
    gate, up, down_t = (torch.randn(F, D, generator=g) / 6 for _ in range(3))
    gate_bias, up_bias = (torch.randn(F, generator=g) if bias else None for _ in range(2))
    x = torch.randn(D, generator=g)
    index = torch.randperm(F, generator=g)[: int(F * share)].sort().values
    act = ACTS[activation]
    u = up @ x + (up_bias if bias else 0)
    h = act(gate @ x + (gate_bias if bias else 0)) * u if glu else act(u)
    expected = h[index] @ down_t[index]
    out = native.glu_rows(x, gate if glu else None, up, down_t, index, activation, gate_bias if glu else None, up_bias)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
