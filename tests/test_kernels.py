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


def _between(magnitudes: torch.Tensor, keep: float) -> float:
    """A threshold keeping about `keep` of the values, halfway between two of them so rounding cannot flip one."""
    ranked = magnitudes.sort().values.tolist()
    drop = len(ranked) - round(keep * len(ranked))  # the smallest `drop` values are skipped
    if drop == 0:
        return -1.0
    return ranked[-1] + 1.0 if drop == len(ranked) else (ranked[drop - 1] + ranked[drop]) / 2


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    neurons=st.integers(1, 70),
    keep_in=st.floats(0, 1),
    keep_mid=st.floats(0, 1),
    glu=st.booleans(),
    threads=st.sampled_from([1, 2, 3]),
)
def test_teal_kernel_equals_masked_ffn(seed, neurons, keep_in, keep_mid, glu, threads):
    """Any neuron count (the block layout pads to 16), any thresholds, any thread count."""
    g = torch.Generator().manual_seed(seed)
    F, D = neurons, 24
    gate, up, down_t = (torch.randn(F, D, generator=g) / 4 for _ in range(3))
    x = torch.randn(D, generator=g)
    tau_in = _between(x.abs(), keep_in)
    x_kept = x * (x.abs() > tau_in)
    h = torch.nn.functional.silu(gate @ x_kept) * (up @ x_kept) if glu else torch.nn.functional.silu(up @ x_kept)
    tau_mid = _between(h.abs(), keep_mid)
    kept = h.abs() > tau_mid
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out, kept_in, kept_mid = native.teal_ffn(
            x, native.teal_layout(gate if glu else None, up), down_t, tau_in, tau_mid, "silu", glu
        )
    finally:
        torch.set_num_threads(before)
    torch.testing.assert_close(out, (h * kept) @ down_t, rtol=1e-5, atol=1e-5)
    assert (kept_in, kept_mid) == (int((x.abs() > tau_in).sum()), int(kept.sum()))
