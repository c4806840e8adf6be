"""The C kernels against plain PyTorch on random inputs and random active sets: the GLU gather kernel, teal's fused
kernel and moe's grouped batch kernel (the cats kernel and the methods' fast paths are tested against their
reference paths in test_methods.py and test_moe.py); the signature table and layout constants against the C source;
loading a library that lacks a function."""

import ctypes
import re
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ponder.errors import PonderError
from ponder.kernels import layouts, library, native

pytestmark = pytest.mark.skipif(native.library() is None, reason="no C compiler: the PyTorch path is used")

ACTS = {
    "silu": torch.nn.functional.silu,
    "gelu_pytorch_tanh": lambda v: torch.nn.functional.gelu(v, approximate="tanh"),
    "gelu": torch.nn.functional.gelu,
    "relu": torch.relu,
}


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    share=st.floats(0, 1),
    activation=st.sampled_from(["silu", "gelu_pytorch_tanh"]),
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
    out = native.glu_rows(x, gate if glu else None, up, down_t, index, activation, gate_bias if glu else None, up_bias,
                          workspace=native.Workspace())  # fmt: skip
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
            x, layouts.teal_layout(gate if glu else None, up), down_t, tau_in, tau_mid, "silu", glu
        )
    finally:
        torch.set_num_threads(before)
    torch.testing.assert_close(out, (h * kept) @ down_t, rtol=1e-5, atol=1e-5)
    assert (kept_in, kept_mid) == (int((x.abs() > tau_in).sum()), int(kept.sum()))


def _moe_case(seed: int, tokens: int, hidden: int, size: int, shared: int, routed: int, share: float, glu: bool,
              bias: bool):  # fmt: skip
    """Random permuted expert weights, inputs and routes, and the expected output computed expert by expert."""
    g = torch.Generator().manual_seed(seed)
    F = (shared + routed) * size
    gate, up, down_t = (torch.randn(F, hidden, generator=g) / 4 for _ in range(3))
    gate_bias, up_bias = (torch.randn(F, generator=g) / 4 if bias else None for _ in range(2))
    x = torch.randn(tokens, hidden, generator=g)
    chosen = torch.rand(tokens, routed, generator=g) < share  # [N, E]
    return (x, gate if glu else None, up, down_t, gate_bias if glu else None, up_bias, chosen)


def _moe_expected(x, gate, up, down_t, gate_bias, up_bias, chosen, *, size, shared, activation):
    pre = x @ up.t() + (0 if up_bias is None else up_bias)
    act = ACTS[activation]
    h = act(x @ gate.t() + (0 if gate_bias is None else gate_bias)) * pre if gate is not None else act(pre)
    runs = torch.cat([torch.ones(len(x), shared, dtype=torch.bool), chosen], dim=1)  # [N, all experts]
    return (h * runs.repeat_interleave(size, dim=1)) @ down_t


def _moe_grouped(x, gate, up, down_t, gate_bias, up_bias, chosen, *, size, shared, activation):
    panels = layouts.moe_panels(gate, up, size, gate_bias, up_bias)
    offsets = torch.zeros(chosen.shape[1] + 1, dtype=torch.int64)
    offsets[1:] = chosen.sum(0).cumsum(0)
    tokens = chosen.t().nonzero()[:, 1].contiguous()
    return native.moe_grouped(x, *panels, down_t, size=size, glu=gate is not None, activation=activation,
                              shared=shared, offsets=offsets, tokens=tokens)  # fmt: skip


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    tokens=st.integers(1, 150),  # past one work item (64 tokens of an expert)
    hidden=st.integers(1, 70),  # any width: the 16-lane tails are masked
    size=st.integers(1, 48),  # panels of any width up to the 192 columns the kernel takes
    shared=st.integers(0, 2),
    routed=st.integers(1, 6),
    share=st.floats(0, 1),
    glu=st.booleans(),
    bias=st.booleans(),
    activation=st.sampled_from(sorted(ACTS)),
)
def test_moe_grouped_equals_expert_by_expert_and_ignores_threads(
    seed, tokens, hidden, size, shared, routed, share, glu, bias, activation
):
    """Equal to the masked computation for random routes, and bit for bit the same at 1, 2 or 3 threads (each
    output row gets its experts' terms in one order whatever thread computes it)."""
    case = _moe_case(seed, tokens, hidden, size, shared, routed, share, glu, bias)
    options = {"size": size, "shared": shared, "activation": activation}
    before, outs = torch.get_num_threads(), []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            outs.append(_moe_grouped(*case, **options))
    finally:
        torch.set_num_threads(before)
    expected = _moe_expected(*case, **options)
    scale = float(expected.abs().max().clamp(min=1))  # sums of up to ~100 terms: cancellation near 0 is relative
    torch.testing.assert_close(outs[0], expected, rtol=1e-5, atol=1e-5 * scale)
    for out in outs[1:]:
        assert torch.equal(out, outs[0])


def test_moe_panels_refuse_experts_wider_than_the_kernel_takes():
    up = torch.randn(4 * 97, 8)
    assert layouts.moe_panels(up, up, 97, None, None) is None  # 194 gate + up columns
    assert layouts.moe_panels(None, up[:192], 192, None, None) is not None


@pytest.fixture
def portable(tmp_path) -> ctypes.CDLL:
    """The plain-C build, for CPUs without AVX-512."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists() or "avx512f" not in cpuinfo.read_text():
        pytest.skip("the default build is already the portable one here")
    flags = [f for f in library.FLAGS if f != "-march=native"] + ["-march=x86-64-v2"]
    source = tmp_path / "sparse_ffn.c"
    source.write_bytes(library.source_path().read_bytes())
    library.build(tmp_path / "portable.so", source, flags)
    return library.load(tmp_path / "portable.so")


def test_moe_grouped_portable_build_agrees(portable):
    """The plain-C build computes what the vector build does."""
    for activation in ACTS:
        case = _moe_case(3, 70, 37, 24, 1, 5, 0.5, True, True)
        x, gate, up, down_t, gate_bias, up_bias, chosen = case
        options = {"size": 24, "shared": 1, "activation": activation}
        vector = _moe_grouped(*case, **options)
        panels, panel_bias = layouts.moe_panels(gate, up, 24, gate_bias, up_bias)
        offsets = torch.zeros(6, dtype=torch.int64)
        offsets[1:] = chosen.sum(0).cumsum(0)
        tokens = chosen.t().nonzero()[:, 1].contiguous()
        out = torch.empty_like(vector)
        portable.moe_grouped(x.data_ptr(), 70, 37, panels.data_ptr(), panel_bias.data_ptr(), down_t.data_ptr(), 24,
                             panels.shape[2], 1, native.ACTIVATIONS[activation], 1, 5, offsets.data_ptr(),
                             tokens.data_ptr(), out.data_ptr())  # fmt: skip
        torch.testing.assert_close(out, vector, rtol=1e-5, atol=1e-5)


def _greedy_case(seed: int, rows: int, cols: int, bias: bool, spread: float):
    """An output head whose rows are one shared row plus noise `spread` times smaller: near-ties that an int8 copy
    cannot order, with per-row scales far apart."""
    g = torch.Generator().manual_seed(seed)
    shared = torch.randn(cols, generator=g)
    weight = (shared + spread * torch.randn(rows, cols, generator=g)) * torch.rand(rows, 1, generator=g).add(0.5)
    return weight.contiguous(), torch.randn(rows, generator=g) * spread if bias else None


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    rows=st.integers(1, 300),
    cols=st.integers(1, 90),
    bias=st.booleans(),
    spread=st.sampled_from([1.0, 1e-2, 1e-4]),
    magnitude=st.sampled_from([1e-3, 1.0, 1e3]),
)
def test_greedy_head_picks_the_token_the_full_head_picks(seed, rows, cols, bias, spread, magnitude):
    weight, b = _greedy_case(seed, rows, cols, bias, spread)
    head = native.GreedyHead(weight, b)
    for step in range(4):
        x = torch.randn(cols, generator=torch.Generator().manual_seed(seed + step)) * magnitude
        assert head(x) == int(native.gemv(weight, x, b).argmax())


def test_greedy_head_screen_is_what_keeps_it_exact():
    """Without its error bound the int8 screen picks other tokens on near-ties: the bound is doing the work."""
    weight, b = _greedy_case(0, 2000, 64, True, 1e-4)
    head = native.GreedyHead(weight, b)
    xs = [torch.randn(64, generator=torch.Generator().manual_seed(s)) for s in range(20)]
    exact = [int(native.gemv(weight, x, b).argmax()) for x in xs]
    assert [head(x) for x in xs] == exact
    assert head.recomputed > 1  # near-ties: the screen lets several rows through
    head.bound.zero_()
    assert [head(x) for x in xs] != exact


def test_greedy_head_ties_and_non_finite_inputs_match_argmax():
    weight = torch.randn(50, 33)
    weight[7] = weight[3] = weight[40] = weight[3] * 4  # exact ties: the first wins, as in torch.argmax
    head, x = native.GreedyHead(weight), weight[3].clone()
    assert head(x) == int(native.gemv(weight, x).argmax()) == 3
    x[5] = float("inf")
    assert head(x) == int(native.gemv(weight, x).argmax())
    assert head(torch.full((33,), float("nan"))) == int(native.gemv(weight, torch.full((33,), float("nan"))).argmax())


def test_greedy_head_portable_build_agrees(portable):
    weight, b = _greedy_case(1, 500, 70, True, 1e-4)
    head = native.GreedyHead(weight, b)
    for seed in range(10):
        x = torch.randn(70, generator=torch.Generator().manual_seed(seed))
        count = (ctypes.c_int64 * 1)()
        token = portable.greedy_head(*head._args, 500, 70, x.data_ptr(), head._approx.data_ptr(), count)
        assert token == head(x) == int(native.gemv(weight, x, b).argmax())


_C_TYPES = {"int64_t": library.I64, "float": library.F32, "int": library.I32}


def _exported_prototypes(source: str) -> dict[str, library.Prototype]:
    """Every non-static function defined in the C source, its parameters' names and ctypes types."""
    found = {}
    for returns, name, params in re.findall(r"^(void|int64_t|float|int) (\w+)\(([^)]*)\)\s*\{", source, re.M):
        typed = []
        for param in params.split(","):
            declared, param_name = re.fullmatch(r"\s*(.*?)\s*(\w+)\s*", param.replace("*", " * ")).groups()
            kind = library.PTR if "*" in declared else _C_TYPES[declared.replace("const", "").strip()]
            typed.append((param_name, kind))
        found[name] = library.Prototype(tuple(typed), None if returns == "void" else _C_TYPES[returns])
    return found


def test_signature_table_is_the_c_source():
    """Each exported function of sparse_ffn.c is in the table with its parameters' names, types and order and its
    return type, and the table lists nothing else: a C change that the table misses fails here, not as garbage."""
    exported = _exported_prototypes(library.source_path().read_text())
    assert len(exported) == 10
    assert exported == library.SIGNATURES


def test_layout_constants_are_the_c_source():
    source = library.source_path().read_text()
    assert int(re.search(r"^#define TEAL_BLOCK (\d+)$", source, re.M).group(1)) == layouts.TEAL_BLOCK
    assert int(re.search(r"GROUP_WIDTH = (\d+)", source).group(1)) == layouts.GROUP_WIDTH


def test_a_library_lacking_a_function_is_refused_at_load(tmp_path):
    source = tmp_path / "partial.c"
    source.write_text("#include <stdint.h>\nvoid gemv(const float *W, const float *x, const float *b, int64_t rows, "
                      "int64_t cols, float *y) {}\n")  # fmt: skip
    library.build(tmp_path / "partial.so", source)
    with pytest.raises(PonderError, match=r"lacks glu_rows, glu_dense, .*moe_grouped: .*delete it"):
        library.load(tmp_path / "partial.so")


def test_the_loaded_library_declares_every_signature():
    lib = library.library()
    for name, prototype in library.SIGNATURES.items():
        fn = getattr(lib, name)
        assert (fn.argtypes, fn.restype) == (prototype.argtypes, prototype.restype)


def test_workspace_buffers_grow_and_are_reused():
    workspace, other = native.Workspace(), native.Workspace()
    small = workspace.get("scratch", 8)
    assert workspace.get("scratch", 4).data_ptr() == small.data_ptr()  # smaller asks reuse it
    grown = workspace.get("scratch", 16)
    assert grown.numel() == 16 and workspace.get("scratch", 16).data_ptr() == grown.data_ptr()
    assert workspace.get("scratch", 8, torch.int64).dtype == torch.int64  # one buffer per name and dtype
    assert other.get("scratch", 8).data_ptr() != grown.data_ptr()  # owners never share
