"""Building and loading `sparse_ffn.c`, and the one table of its exported functions' C signatures.

No torch headers are involved, so the build takes about a second with the system C compiler (a C++ extension
through torch.utils.cpp_extension took minutes here). The library is cached under the ponder cache keyed by the
source's and flags' hash; where no compiler works, `library()` returns None and callers use the PyTorch path, which
is also the specification the kernels are tested against. Import torch before loading: the library then shares
torch's OpenMP runtime (one thread pool, sized by torch.set_num_threads).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from ponder.errors import PonderError
from ponder.models.load import cache_root

SOURCE = "sparse_ffn.c"
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c11")
ACTIVATIONS = {"silu": 0, "gelu_pytorch_tanh": 1, "gelu_new": 1, "gelu": 2, "relu": 3}
"""HF activation names → the `act` codes of sparse_ffn.c's `activate`."""

PTR, I64, F32, I32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_int
"""Every pointer (tensor data, NULL for None, ctypes arrays), int64_t, float, int."""


@dataclass(frozen=True)
class Prototype:
    """One exported C function: its parameters by name and type, in the C prototype's order, and its return type
    (None for void). The names are the C source's (tests/test_kernels.py holds the two to each other)."""

    params: tuple[tuple[str, type], ...]
    restype: type | None = None

    @property
    def argtypes(self) -> list[type]:
        return [kind for _, kind in self.params]


def c(returns: type | None = None, /, **params: type) -> Prototype:
    """A prototype written as the C one reads: `c(I64, rows=I64, x=PTR)` is `int64_t f(int64_t rows, float *x)`."""
    return Prototype(tuple(params.items()), returns)


SIGNATURES: dict[str, Prototype] = {
    "glu_rows": c(x=PTR, gate=PTR, up=PTR, down_t=PTR, gate_bias=PTR, up_bias=PTR, idx=PTR, k=I64, D=I64, act=I32,
                  y=PTR, scratch=PTR),
    "glu_dense": c(x=PTR, gate=PTR, up=PTR, down=PTR, gate_bias=PTR, up_bias=PTR, D=I64, F=I64, act=I32, y=PTR,
                   h=PTR),
    "moe_ffn": c(x=PTR, D=I64, w1=PTR, b1=PTR, R=I64, w2=PTR, b2=PTR, E=I64, policy=I32, knob=F32, chooser=PTR,
                 chooser_bias=PTR, pseudo=I64, pseudo_kinds=PTR, comp_copy=PTR, comp_const=PTR, gate=PTR, up=PTR,
                 down_t=PTR, gate_bias=PTR, up_bias=PTR, shared=I64, S=I64, act=I32, y=PTR, scratch=PTR, work=PTR,
                 idx=PTR, chosen=PTR, out_counts=PTR),
    "teal_ffn": c(x=PTR, in_major=PTR, down_t=PTR, D=I64, F=I64, glu=I32, tau_in=F32, tau_mid=F32, act=I32, y=PTR,
                  work=PTR, index=PTR, counts=PTR),
    "cats_ffn": c(x=PTR, gate=PTR, up=PTR, down_t=PTR, gate_bias=PTR, up_bias=PTR, D=I64, F=I64, tau=F32, act=I32,
                  y=PTR, work=PTR, index=PTR, counts=PTR),
    "gemv": c(W=PTR, x=PTR, b=PTR, rows=I64, cols=I64, y=PTR),
    "greedy_head": c(I64, Wq=PTR, scale=PTR, bound=PTR, W=PTR, b=PTR, rows=I64, cols=I64, x=PTR, approx=PTR,
                     recomputed=PTR),
    "attention_decode": c(x=PTR, D=I64, input_w=PTR, post_w=PTR, eps=F32, wqkv=PTR, bqkv=PTR, H=I64, KV=I64, E=I64,
                          q_norm=PTR, k_norm=PTR, qk_eps=F32, cos=PTR, sin_signed=PTR, kcache=PTR, vcache=PTR,
                          max_len=I64, pos=I64, scale=F32, wo=PTR, bo=PTR, ffn_in=PTR, work=PTR),
    "layer_skip_decode": c(I64, x=PTR, D=I64, w1=PTR, b1=PTR, R=I64, w2=PTR, b2=F32, threshold=F32, input_w=PTR,
                           eps=F32, wkv=PTR, bkv=PTR, KV=I64, E=I64, k_norm=PTR, qk_eps=F32, cos=PTR, sin_signed=PTR,
                           kcache=PTR, vcache=PTR, max_len=I64, pos=I64, scale=PTR, shift=PTR, work=PTR),
    "moe_grouped": c(x=PTR, N=I64, D=I64, panels=PTR, panel_bias=PTR, down_t=PTR, S=I64, Wp=I64, glu=I32, act=I32,
                     shared=I64, routed=I64, offsets=PTR, tokens=PTR, y=PTR),
}  # fmt: skip


def source_path() -> Path:
    return Path(str(resources.files("ponder.kernels") / SOURCE))


def build(target: Path, source: Path, flags: tuple[str, ...] | list[str] = FLAGS) -> None:
    """Compile `source` into the shared library `target` (written atomically)."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise OSError("no C compiler found")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        subprocess.run([compiler, *flags, str(source), "-o", tmp, "-lm"], check=True, capture_output=True)
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


def load(path: Path) -> ctypes.CDLL:
    """A built library with every function of `SIGNATURES` declared; one it lacks is an error here, not at the
    first call that needs it."""
    lib = ctypes.CDLL(str(path))
    missing = [name for name in SIGNATURES if not hasattr(lib, name)]
    if missing:
        raise PonderError(
            f"the kernel library {path} lacks {', '.join(missing)}: it was built from another sparse_ffn.c; "
            "delete it and it is rebuilt"
        )
    for name, prototype in SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = prototype.argtypes, prototype.restype
    return lib


@cache
def library() -> ctypes.CDLL | None:
    """The compiled kernels, building them on first use; None if they cannot be built here or PONDER_NATIVE=0."""
    if os.environ.get("PONDER_NATIVE", "1") == "0":
        return None
    source = source_path()
    digest = hashlib.sha256(source.read_bytes() + " ".join(FLAGS).encode()).hexdigest()[:16]
    target = cache_root() / "kernels" / f"sparse_ffn-{digest}.so"
    try:
        if not target.exists():
            build(target, source)
        return load(target)
    except (OSError, subprocess.CalledProcessError):
        return None
