"""The C gather kernels against plain PyTorch on random inputs and random active sets."""

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


def case(seed: int, rows: int, dim: int, active: int):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(rows, dim, generator=g)
    x = torch.randn(dim, generator=g)
    index = torch.randperm(rows, generator=g)[:active].sort().values
    return weight, x, index


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), rows=st.integers(1, 300), dim=st.integers(1, 200), share=st.floats(0, 1))
def test_rows_dot_and_axpy(seed, rows, dim, share):
    weight, x, index = case(seed, rows, dim, int(rows * share))
    torch.testing.assert_close(native.rows_dot(x, weight, index), weight[index] @ x, rtol=1e-5, atol=1e-5)
    coef = torch.randn(index.numel())
    torch.testing.assert_close(native.rows_axpy(coef, weight, index), coef @ weight[index], rtol=1e-5, atol=1e-5)


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
