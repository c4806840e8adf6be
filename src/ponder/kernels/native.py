"""The C gather-GEMV kernels (`sparse_ffn.c`), compiled once per machine and called through ctypes.

No torch headers are involved, so the build takes about a second with the system C compiler (a C++ extension
through torch.utils.cpp_extension took minutes here). The library is cached under the ponder cache keyed by the
source's hash; where no compiler works, `library()` returns None and callers use the PyTorch path, which is also
the specification the kernels are tested against. Import torch before loading: the library then shares torch's
OpenMP runtime (one thread pool, sized by torch.set_num_threads).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from functools import cache
from importlib import resources
from pathlib import Path

import torch

from ponder.models.load import cache_root

_SOURCE = "sparse_ffn.c"
_FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c11"]
ACTIVATIONS = {"silu": 0, "gelu_pytorch_tanh": 1, "gelu_new": 1, "gelu": 2, "relu": 3}


def _build(target: Path, source: Path) -> None:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise OSError("no C compiler found")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        subprocess.run([compiler, *_FLAGS, str(source), "-o", tmp, "-lm"], check=True, capture_output=True)
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


@cache
def library() -> ctypes.CDLL | None:
    """The compiled kernels, building them on first use; None if they cannot be built here."""
    if os.environ.get("PONDER_NATIVE", "1") == "0":
        return None
    source = Path(str(resources.files("ponder.kernels") / _SOURCE))
    digest = hashlib.sha256(source.read_bytes() + " ".join(_FLAGS).encode()).hexdigest()[:16]
    target = cache_root() / "kernels" / f"sparse_ffn-{digest}.so"
    try:
        if not target.exists():
            _build(target, source)
        lib = ctypes.CDLL(str(target))
    except (OSError, subprocess.CalledProcessError):
        return None
    pointer, i64 = ctypes.c_void_p, ctypes.c_int64
    lib.glu_rows.argtypes = [pointer] * 7 + [i64, i64, ctypes.c_int, pointer, pointer]
    lib.teal_ffn.argtypes = [pointer] * 3 + [i64, i64, ctypes.c_int, ctypes.c_float, ctypes.c_float, ctypes.c_int]
    lib.teal_ffn.argtypes += [pointer] * 4
    lib.cats_ffn.argtypes = [pointer] * 6 + [i64, i64, ctypes.c_float, ctypes.c_int] + [pointer] * 4
    for fn in (lib.glu_rows, lib.teal_ffn, lib.cats_ffn):
        fn.restype = None
    return lib


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _check(*tensors: torch.Tensor | None) -> None:
    for t in tensors:
        assert t is None or (t.is_contiguous() and t.device.type == "cpu"), "kernels take contiguous CPU tensors"


_WORKSPACE: dict[tuple[str, torch.dtype], torch.Tensor] = {}


def _workspace(name: str, size: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A reusable buffer of at least `size` elements: kernels' scratch is not reallocated every token."""
    buffer = _WORKSPACE.get((name, dtype))
    if buffer is None or buffer.numel() < size:
        buffer = _WORKSPACE[(name, dtype)] = torch.empty(size, dtype=dtype)
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
) -> torch.Tensor:
    """The FFN output [D] of one token x [D] through the active neurons `index` only (no down bias)."""
    _check(x, gate, up, down_t, index, gate_bias, up_bias)
    D = up.shape[1]
    out = x.new_empty(D)
    scratch = _workspace("scratch", torch.get_num_threads() * D)
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


def teal_ffn(
    x: torch.Tensor,
    in_major: torch.Tensor,
    down_t: torch.Tensor,
    tau_in: float,
    tau_mid: float,
    activation: str,
    glu: bool,
) -> tuple[torch.Tensor, int, int]:
    """TEAL for one token in one call: (output [D], kept inputs, kept neurons). in_major [D, P·F], down_t [F, D]."""
    _check(x, in_major, down_t)
    F, D = down_t.shape
    out = x.new_empty(D)
    work = _workspace("work", in_major.shape[1] + max(D, F) * 2)
    index = _workspace("index", max(D, F), torch.int64)
    counts = _workspace("counts", 2, torch.int64)
    library().teal_ffn(
        _ptr(x), _ptr(in_major), _ptr(down_t), D, F, int(glu), tau_in, tau_mid, ACTIVATIONS[activation],
        _ptr(out), _ptr(work), _ptr(index), _ptr(counts),
    )  # fmt: skip
    kept_in, kept_mid = counts[:2].tolist()
    return out, kept_in, kept_mid


def cats_ffn(
    x: torch.Tensor,
    gate: torch.Tensor,
    up: torch.Tensor,
    down_t: torch.Tensor,
    tau: float,
    activation: str,
    gate_bias: torch.Tensor | None = None,
    up_bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, int]:
    """CATS for one token in one call: (output [D] without down bias, active neurons)."""
    _check(x, gate, up, down_t, gate_bias, up_bias)
    F, D = gate.shape
    out = x.new_empty(D)
    work = _workspace("work", 3 * F)
    index = _workspace("index", F, torch.int64)
    counts = _workspace("counts", 2, torch.int64)
    library().cats_ffn(
        _ptr(x), _ptr(gate), _ptr(up), _ptr(down_t), _ptr(gate_bias), _ptr(up_bias), D, F, tau,
        ACTIVATIONS[activation], _ptr(out), _ptr(work), _ptr(index), _ptr(counts),
    )  # fmt: skip
    return out, int(counts[0])
