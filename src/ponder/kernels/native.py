"""The C kernels' Python face: thin wrappers over `sparse_ffn.c`'s functions and kernel objects bound once to one
module's weights. `library()` (None where no compiler works: callers then take the PyTorch path, the specification)
and `ACTIVATIONS` (the activations the kernels know) come from `ponder.kernels.library`, which builds, loads and
declares the C signatures; the weight layouts some kernels read are in `ponder.kernels.layouts`.

Nothing here is shared between callers: a kernel object owns its scratch, and the one-shot wrappers write theirs to
the `Workspace` their caller owns (a module, a decoder), so two decoders in one process never touch each other's.
"""

from __future__ import annotations

import ctypes

import torch

from ponder.kernels.library import ACTIVATIONS, library

__all__ = [
    "ACTIVATIONS",
    "AttentionKernel",
    "DenseKernel",
    "GreedyHead",
    "LayerSkipKernel",
    "MoEKernel",
    "TealKernel",
    "Workspace",
    "cats_ffn",
    "gemv",
    "glu_dense",
    "glu_rows",
    "library",
    "moe_grouped",
    "teal_ffn",
]


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _check(*tensors: torch.Tensor | None) -> None:
    for t in tensors:
        assert t is None or (t.is_contiguous() and t.is_cpu), "kernels take contiguous CPU tensors"


class Workspace:
    """Scratch for the one-shot wrappers, owned by one caller that runs one kernel at a time (a module, a decoder):
    each buffer grows to the largest size asked for and is reused, so a token does not reallocate it. Give each
    owner its own; one shared between threads would let their kernels overwrite each other's scratch."""

    __slots__ = ("_buffers",)

    def __init__(self) -> None:
        self._buffers: dict[tuple[str, torch.dtype], torch.Tensor] = {}

    def get(self, name: str, size: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The buffer `name` with at least `size` elements (its contents are whatever the last call left)."""
        buffer = self._buffers.get((name, dtype))
        if buffer is None or buffer.numel() < size:
            buffer = self._buffers[(name, dtype)] = torch.empty(size, dtype=dtype)
        return buffer


def glu_rows(
    x: torch.Tensor,
    gate: torch.Tensor | None,
    up: torch.Tensor,
    down_t: torch.Tensor,
    index: torch.Tensor,
    activation: str,
    gate_bias: torch.Tensor | None = None,
    up_bias: torch.Tensor | None = None,
    *,
    workspace: Workspace,
) -> torch.Tensor:
    """The FFN output [D] of one token x [D] through the active neurons `index` only (no down bias)."""
    _check(x, gate, up, down_t, index, gate_bias, up_bias)
    D = up.shape[1]
    out = x.new_empty(D)
    scratch = workspace.get("scratch", torch.get_num_threads() * D)
    library().glu_rows(
        _ptr(x),
        _ptr(gate),
        _ptr(up),
        _ptr(down_t),
        _ptr(gate_bias),
        _ptr(up_bias),
        _ptr(index),
        index.numel(),
        D,
        ACTIVATIONS[activation],
        _ptr(out),
        _ptr(scratch),
    )
    return out


def glu_dense(
    x: torch.Tensor,
    gate: torch.Tensor | None,
    up: torch.Tensor,
    down: torch.Tensor,
    activation: str,
    gate_bias: torch.Tensor | None = None,
    up_bias: torch.Tensor | None = None,
    *,
    workspace: Workspace,
) -> torch.Tensor:
    """The dense FFN output [D] of one token x [D], every neuron (no down bias); weights in nn.Linear layout."""
    _check(x, gate, up, down, gate_bias, up_bias)
    F, D = up.shape
    out = x.new_empty(D)
    h = workspace.get("dense_h", F)
    library().glu_dense(
        _ptr(x), _ptr(gate), _ptr(up), _ptr(down), _ptr(gate_bias), _ptr(up_bias), D, F, ACTIVATIONS[activation],
        _ptr(out), _ptr(h),
    )  # fmt: skip
    return out


def teal_ffn(
    x: torch.Tensor,
    in_major: torch.Tensor,
    down_t: torch.Tensor,
    tau_in: float,
    tau_mid: float,
    activation: str,
    glu: bool,
) -> tuple[torch.Tensor, int, int]:
    """TEAL for one token in one call: (output [D], kept inputs, kept neurons). in_major from `layouts.teal_layout`,
    down_t [F, D]. Binds a `TealKernel` for this call; the lean decoder keeps one per layer instead."""
    _check(x)
    return TealKernel(in_major, down_t, activation, glu)(x, tau_in, tau_mid)


def cats_ffn(
    x: torch.Tensor,
    gate: torch.Tensor,
    up: torch.Tensor,
    down_t: torch.Tensor,
    tau: float,
    activation: str,
    gate_bias: torch.Tensor | None = None,
    up_bias: torch.Tensor | None = None,
    *,
    workspace: Workspace,
) -> tuple[torch.Tensor, int]:
    """CATS for one token in one call: (output [D] without down bias, active neurons)."""
    _check(x, gate, up, down_t, gate_bias, up_bias)
    F, D = gate.shape
    out = x.new_empty(D)
    threads = torch.get_num_threads()
    work = workspace.get("work", F + threads * D)
    index = workspace.get("index", F + threads, torch.int64)
    counts = workspace.get("counts", 2, torch.int64)
    library().cats_ffn(
        _ptr(x), _ptr(gate), _ptr(up), _ptr(down_t), _ptr(gate_bias), _ptr(up_bias), D, F, tau,
        ACTIVATIONS[activation], _ptr(out), _ptr(work), _ptr(index), _ptr(counts),
    )  # fmt: skip
    return out, int(counts[0])


class MoEKernel:
    """`moe_ffn` prepared for one module: every weight pointer checked and converted once, so a decode step pays
    one ctypes call (the per-call checks cost ~45 µs per layer, a third of the layer's sparse work).

    router: (W1 [R, D], b1 [R], W2 [E, R], b2 [E]); chooser: (W [P, D], b [P]) or None; pseudo_kinds: [P] int32
    (0 zero, 1 copy, 2 constant) or None; compensation: (copy, constant) rows [E + 1, D] (the last their total),
    either None; weights: permuted (gate, up, down_t, gate_bias, up_bias). The tensors must outlive the kernel
    and stay where they are (build a new one after replacing any).
    """

    def __init__(
        self, router, chooser, pseudo_kinds, compensation, weights, *, shared: int, size: int, activation: str
    ):
        w1, b1, w2, b2 = router
        chooser_w, chooser_b = chooser if chooser is not None else (None, None)
        tensors = (w1, b1, w2, b2, chooser_w, chooser_b, pseudo_kinds, *compensation, *weights)
        _check(*tensors)
        self._keep = tensors
        self.D, self.E = w1.shape[1], w2.shape[0]
        R, pseudo = w1.shape[0], 0 if pseudo_kinds is None else pseudo_kinds.numel()
        self.scratch = torch.empty(torch.get_num_threads() * self.D)
        self.work = torch.empty(3 * self.E + R + pseudo + 8)
        self.index = torch.empty(shared + self.E * size, dtype=torch.int64)
        self.chosen = torch.empty(self.E, dtype=torch.int64)
        self.counts = torch.zeros(2, dtype=torch.int64)
        p = [_ptr(t) for t in tensors]
        self._head = (self.D, p[0], p[1], R, p[2], p[3], self.E)
        self._middle = (p[4], p[5], pseudo, p[6], p[7], p[8], *p[9:14], shared, size, ACTIVATIONS[activation])
        self._tail = tuple(map(_ptr, (self.scratch, self.work, self.index, self.chosen, self.counts)))
        self._fn = library().moe_ffn

    def __call__(self, x: torch.Tensor, policy: int, knob: float) -> tuple[torch.Tensor, int, int]:
        """One contiguous fp32 token x [D] → (output [D] without down bias, experts chosen, pseudo option);
        the chosen experts are `self.chosen[:n]` until the next call."""
        out = torch.empty(self.D)
        self._fn(x.data_ptr(), *self._head, policy, knob, *self._middle, out.data_ptr(), *self._tail)
        n, option = self.counts.tolist()
        return out, n, option


def moe_grouped(
    x: torch.Tensor,
    panels: torch.Tensor,
    panel_bias: torch.Tensor,
    down_t: torch.Tensor,
    *,
    size: int,
    glu: bool,
    activation: str,
    shared: int,
    offsets: torch.Tensor,
    tokens: torch.Tensor,
) -> torch.Tensor:
    """Batched MoE FFN without down bias: x [N, D] through the `shared` experts for every token and each routed
    expert e for tokens[offsets[e]:offsets[e + 1]] (int64 CSR, ascending per expert) → [N, D]."""
    _check(x, panels, panel_bias, down_t, offsets, tokens)
    N, D = x.shape
    routed = offsets.numel() - 1
    out = x.new_empty(N, D)
    library().moe_grouped(
        _ptr(x), N, D, _ptr(panels), _ptr(panel_bias), _ptr(down_t), size, panels.shape[2], int(glu),
        ACTIVATIONS[activation], shared, routed, _ptr(offsets), _ptr(tokens), _ptr(out),
    )  # fmt: skip
    return out


def gemv(weight: torch.Tensor, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """weight [R, C] @ x [C] (+ bias) → [R], threads splitting the rows."""
    _check(weight, x, bias)
    out = x.new_empty(weight.shape[0])
    library().gemv(_ptr(weight), _ptr(x), _ptr(bias), weight.shape[0], weight.shape[1], _ptr(out))
    return out


class GreedyHead:
    """The greedy next token of an output head, `argmax(gemv(weight, h, bias))` exactly, at about a quarter of its
    memory traffic: `greedy_head` screens every row through an int8 copy of the weight (one scale per row) and
    recomputes in fp32 only the rows whose error bound lets them reach the top, usually one or two. For SmolLM2's
    tied 113 MB head that is 28 MB read a token instead (the copy is extra memory). The bound per row is the
    quantisation error's norm plus both dot products' rounding, computed in fp64 with a margin; tests hold the
    kernel to the argmax on random and adversarial (near-tied) rows. The tensors must stay where they are."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        weight, bias = weight.detach(), None if bias is None else bias.detach()
        _check(weight, bias)
        rows, cols = weight.shape
        self.weight, self.bias = weight, bias
        self.quantised = torch.empty(rows, cols, dtype=torch.int8)
        self.scale, self.bound = torch.empty(rows), torch.empty(rows)
        rounding = 2 * cols * 2.0**-24  # both dot products' fp32 rounding, relative to |w|·|h|, generous
        for start in range(0, rows, 4096):  # fp64 in chunks: a bounded transient
            w = weight[start : start + 4096].double()
            scale = (w.abs().amax(dim=1) / 127).float()
            scale = torch.where(scale > 0, scale, torch.ones_like(scale))
            quantised = torch.round(w / scale.double()[:, None]).clamp_(-127, 127)
            dequantised = quantised * scale.double()[:, None]
            error = (w - dequantised).norm(dim=1) + rounding * (w.norm(dim=1) + dequantised.norm(dim=1))
            self.quantised[start : start + 4096] = quantised
            self.scale[start : start + 4096], self.bound[start : start + 4096] = scale, error * 1.01
        self._approx = torch.empty(weight.shape[0])
        self._recomputed = (ctypes.c_int64 * 1)()
        self._args = tuple(map(_ptr, (self.quantised, self.scale, self.bound, self.weight, self.bias)))
        self._shape = weight.shape
        self._fn = library().greedy_head

    def bytes_read(self) -> int:
        """What a call reads besides the few rows it recomputes: the int8 copy, its scales and bounds."""
        return self.quantised.numel() + (self.scale.numel() + self.bound.numel()) * 4

    @property
    def recomputed(self) -> int:
        """Rows the last call recomputed in fp32 (what the screen let through)."""
        return self._recomputed[0]

    def __call__(self, h: torch.Tensor) -> int:
        """The token for one contiguous fp32 hidden state h [D] (already normed)."""
        token = self._fn(*self._args, *self._shape, h.data_ptr(), self._approx.data_ptr(), self._recomputed)
        if token < 0:  # h is not finite: the full head, as argmax would see it
            return int(gemv(self.weight, h, self.bias).argmax())
        return token


class _TokenKernel:
    """A one-token FFN kernel prepared for one module's weights, for the lean decoder's per-layer call: pointers and
    scratch are bound once: for teal 12 µs a call instead of 24 µs through the module, 8.7 µs of it the bare
    kernel call (benchmarks/results/ffn-overhead-s8.txt). The tensors must outlive the kernel and stay where they
    are (the decoder builds it with its layers). The output buffer is reused: read it before the next call."""

    def __init__(self, *tensors: torch.Tensor | None, out_features: int):
        _check(*tensors)
        self._keep = tensors
        self.out = torch.empty(out_features)


class DenseKernel(_TokenKernel):
    """`glu_dense` prepared for one dense FFN (weights in nn.Linear layout; gate and biases may be None)."""

    def __init__(self, gate, up, down, gate_bias, up_bias, activation: str):
        super().__init__(gate, up, down, gate_bias, up_bias, out_features=down.shape[0])
        F, D = up.shape
        self._h = torch.empty(F)
        self._args = (*map(_ptr, (gate, up, down, gate_bias, up_bias)), D, F, ACTIVATIONS[activation])
        self._tail = (self.out.data_ptr(), self._h.data_ptr())
        self._fn = library().glu_dense

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self._fn(x.data_ptr(), *self._args, *self._tail)
        return self.out


class TealKernel(_TokenKernel):
    """`teal_ffn` prepared for one module: in_major from `layouts.teal_layout`, down_t [F, D]."""

    def __init__(self, in_major: torch.Tensor, down_t: torch.Tensor, activation: str, glu: bool):
        super().__init__(in_major, down_t, out_features=down_t.shape[1])
        F, D = down_t.shape
        self._width, self._threads = in_major.shape[1], 0  # P·Fp
        self._neurons = in_major.shape[1] // (2 if glu else 1)  # Fp, with padding
        self._args = (in_major.data_ptr(), down_t.data_ptr(), D, F, int(glu))
        self._act = ACTIVATIONS[activation]
        self._counts = (ctypes.c_int64 * 2)()
        self._fn = library().teal_ffn

    def __call__(self, x: torch.Tensor, tau_in: float, tau_mid: float) -> tuple[torch.Tensor, int, int]:
        """(output [D], kept inputs, kept neurons) for x [D]."""
        threads = torch.get_num_threads()
        if threads > self._threads:  # scratch grows with the thread count (torch.set_num_threads may raise it)
            D, padded = self.out.shape[0], self._neurons  # sizes as sparse_ffn.c's teal_ffn documents them
            self._work = torch.empty(D + padded + threads * (D + self._width))
            self._index = torch.empty(D + padded + threads, dtype=torch.int64)
            self._threads = threads
        counts = self._counts
        self._fn(x.data_ptr(), *self._args, tau_in, tau_mid, self._act, self.out.data_ptr(),
                 self._work.data_ptr(), self._index.data_ptr(), counts)  # fmt: skip
        return self.out, counts[0], counts[1]


class AttentionKernel:
    """`attention_decode` prepared for one Llama-style layer: RMSNorm, fused QKV, optional q/k norms, RoPE, the
    KV-cache write, grouped-query attention, o_proj and the residual, then the FFN's input norm, in one call.

    The tensors must outlive the kernel and stay where they are (the lean decoder builds it with its layers).
    """

    def __init__(self, *, input_norm, post_norm, qkv_weight, qkv_bias, q_norm, k_norm, o_proj, heads, kv_heads,
                 head_dim, scaling: float):  # fmt: skip
        tensors = (input_norm.weight, post_norm.weight, qkv_weight, qkv_bias, o_proj.weight, o_proj.bias)
        tensors += (q_norm.weight if q_norm is not None else None, k_norm.weight if k_norm is not None else None)
        _check(*tensors)
        self._keep = tensors
        self.D, self.H, self.KV, self.E = qkv_weight.shape[1], heads, kv_heads, head_dim
        w_in, w_post, wqkv, bqkv, wo, bo, qn, kn = map(_ptr, tensors)
        qk_eps = q_norm.variance_epsilon if q_norm is not None else 0.0
        self._head = (self.D, w_in, w_post, input_norm.variance_epsilon, wqkv, bqkv, heads, kv_heads, head_dim, qn, kn)
        self._head += (qk_eps,)
        self._o = (scaling, wo, bo)
        self._fn = library().attention_decode

    def __call__(self, x, cos, sin_signed, keys, values, position: int, ffn_in, work) -> None:
        """x [D] (updated in place), cos/sin_signed [E] of this position, keys/values [KV, max_len, E], ffn_in [D]
        (written), work: a scratch buffer of `work_size(position)` floats."""
        self._fn(x.data_ptr(), *self._head, cos.data_ptr(), sin_signed.data_ptr(), keys.data_ptr(), values.data_ptr(),
                 keys.shape[1], position, *self._o, ffn_in.data_ptr(), work.data_ptr())  # fmt: skip

    def work_size(self, max_len: int) -> int:
        return self.D + (self.H + 2 * self.KV) * self.E + self.H * self.E + self.H * max_len + self.E


class LayerSkipKernel:
    """`layer_skip_decode` prepared for one layer of a `skip` model: gate, K/V-only write and stand-in for one
    token, in one call. The tensors must outlive the kernel and stay where they are (the lean decoder builds it
    with its layers); the threshold is passed per call, so budgets set later apply."""

    def __init__(self, *, gate, input_norm, kv_weight, kv_bias, k_norm, kv_heads: int, head_dim: int, scale, shift):
        first, last = gate[0], gate[2]  # Linear(D, R), SiLU, Linear(R, 1)
        norm_weight = k_norm.weight if k_norm is not None else None
        tensors = (first.weight, first.bias, last.weight, input_norm.weight, kv_weight, kv_bias, norm_weight)
        tensors += (scale, shift)
        _check(*tensors)
        self._keep = tensors
        R, D = first.weight.shape
        self.work = torch.empty(max(R, D + 2 * kv_heads * head_dim + head_dim))
        w1, b1, w2, w_in, wkv, bkv, kn, scale_p, shift_p = map(_ptr, tensors)
        qk_eps = k_norm.variance_epsilon if k_norm is not None else 0.0
        self._gate = (D, w1, b1, R, w2, float(last.bias))
        self._kv = (w_in, input_norm.variance_epsilon, wkv, bkv, kv_heads, head_dim, kn, qk_eps)
        self._tail = (scale_p, shift_p, self.work.data_ptr())
        self._fn = library().layer_skip_decode

    def __call__(self, x, threshold: float, cos, sin_signed, keys, values, position: int) -> bool:
        """Whether the token with residual x [D] skips the layer; if so its K/V are written at `position` of
        keys/values [KV, max_len, E] and x (updated in place) carries the stand-in."""
        return bool(
            self._fn(x.data_ptr(), *self._gate, threshold, *self._kv, cos.data_ptr(), sin_signed.data_ptr(),
                     keys.data_ptr(), values.data_ptr(), keys.shape[1], position, *self._tail)
        )  # fmt: skip
