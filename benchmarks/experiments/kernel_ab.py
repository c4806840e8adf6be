"""What the kernel A/B scripts share (teal_kernel_ab.py, moe_kernel_ab.py, decode_kernel_ab.py, budget_one_ab.py):
the arguments, a kernel built from `sparse_ffn.c` at a git revision, real one-token FFN inputs, the dense kernels,
timing and the reports."""

from __future__ import annotations

import argparse
import ast
import ctypes
import re
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ponder.adaptive import adaptive_modules, load
from ponder.data import CALIB_DEFAULT, load_text
from ponder.kernels import library, native
from ponder.timing import cpu_name, run_interleaved
from ponder.train.capture import capture_ffn_inputs


def arguments(what: str, **extra: str) -> argparse.Namespace:
    """DIR, --budgets, --repeats, --tokens, and `extra` string options with their defaults."""
    parser = argparse.ArgumentParser()
    parser.add_argument("dir", help=f"a converted {what} model (SwiGLU)")
    parser.add_argument("--budgets", default="0.5,0.25")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--tokens", type=int, default=64)
    for name, default in extra.items():
        parser.add_argument(f"--{name}", default=default)
    return parser.parse_args()


def decode_arguments(what: str) -> argparse.Namespace:
    """DIR, --rev, --budgets and --repeats of the end-to-end decode A/Bs."""
    parser = argparse.ArgumentParser()
    parser.add_argument("dir", help=f"a converted {what} model")
    parser.add_argument("--rev", default="HEAD")
    parser.add_argument("--budgets", default="0.5")
    parser.add_argument("--repeats", type=int, default=7)
    return parser.parse_args()


def kernel_at(revision: str, directory: Path) -> ctypes.CDLL:
    """`sparse_ffn.c` as committed at `revision`, built with that revision's compiler flags into `directory`."""
    source = directory / "old.c"
    source.write_bytes(_show(revision, "src/ponder/kernels/sparse_ffn.c"))
    native_source = _show(revision, "src/ponder/kernels/native.py").decode()
    flags = re.search(r"^_?FLAGS = ([\[(].*[\])])$", native_source, re.M)  # older revisions kept them in native.py
    library.build(directory / "old.so", source, ast.literal_eval(flags.group(1)) if flags else library.FLAGS)
    return _declared(ctypes.CDLL(str(directory / "old.so")))


def _declared(lib: ctypes.CDLL) -> ctypes.CDLL:
    """An older build declared with today's prototypes for the functions it has (it may lack newer ones)."""
    for name, prototype in library.SIGNATURES.items():
        if hasattr(lib, name):
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = prototype.argtypes, prototype.restype
    return lib


def _show(revision: str, path: str) -> bytes:
    return subprocess.run(["git", "show", f"{revision}:{path}"], check=True, capture_output=True).stdout


def setup(directory: str, tokens: int):
    """(model, its adaptive modules, `tokens` real tokens as per-layer FFN inputs [D], each module's dense kernel)."""
    model, tokenizer = load(directory)
    modules = adaptive_modules(model)
    inputs = capture_ffn_inputs(model, tokenizer, load_text(CALIB_DEFAULT), tokens=1024, progress=False)
    per_token = [[layer[64 + t].clone() for layer in inputs] for t in range(tokens)]
    dense = [native.DenseKernel(m.gate, m.up, m.down, None, None, m.activation) for m in modules]
    return model, modules, per_token, dense


def timed(step: Callable, tokens: list) -> float:
    """Milliseconds a token of `step` over `tokens`."""
    start = time.perf_counter()
    for token in tokens:
        step(token)
    return (time.perf_counter() - start) / len(tokens) * 1e3


def layer_kernels(kernels: list, thresholds: list | None = None) -> Callable:
    """One token through every layer's kernel: `kernel(x)`, or `kernel(x, *thresholds[layer])`."""
    if thresholds is None:
        return lambda token: [kernel(x) for kernel, x in zip(kernels, token, strict=True)]
    return lambda token: [k(x, *t) for k, x, t in zip(kernels, token, thresholds, strict=True)]


def rounds(steps: dict[str, Callable], tokens: list, repeats: int) -> dict[str, list[float]]:
    """Each step over `tokens`, a warm-up round and `repeats` interleaved rounds (`run_interleaved`): ms a token."""
    cases = {name: (lambda step=step: [step(token) for token in tokens]) for name, step in steps.items()}
    with torch.inference_mode():
        seconds = run_interleaved(cases, repeats, progress=False)
    return {name: [s / len(tokens) * 1e3 for s in t] for name, t in seconds.items()}


def report(rows: dict[str, list[float]], header: str, pairs: list[tuple[str, str]] = ()) -> None:
    """Median ms a token per row, its range, and the median per-round ratio to the first row (the dense kernel);
    then for each (old, new) pair of rows the median per-round ratio old / new."""
    print(header)
    baseline = next(iter(rows.values()))
    for name, times in rows.items():
        ratio = statistics.median(d / t for d, t in zip(baseline, times, strict=True))
        spread = f"({min(times):.2f}-{max(times):.2f})"
        print(f"{name:28s} {statistics.median(times):7.3f} ms/token  {spread}  {ratio:5.2f}× dense")
    for old, new in pairs:
        print(f"{new} / {old}: {statistics.median(o / n for o, n in zip(rows[old], rows[new], strict=True)):.3f}×")


def compare_decodes(cases: dict[str, Callable], repeats: int, tokens: int = 128) -> None:
    """Time lean decodes of `tokens` new tokens after a 64-token prompt, interleaved (`run_interleaved`), and print
    each case's median tokens/s, its range, and the median per-round ratio to the first case."""
    with torch.inference_mode():
        seconds = run_interleaved(cases, repeats, progress=False)
    print(f"{cpu_name()}, {torch.get_num_threads()} threads, {repeats} rounds, {tokens} new tokens after 64")
    baseline = next(iter(seconds.values()))
    for name, times in seconds.items():
        rates = [tokens / t for t in times]
        ratio = statistics.median(b / t for b, t in zip(baseline, times, strict=True))
        spread = f"({min(rates):.1f}-{max(rates):.1f})"
        print(f"{name:48s} {statistics.median(rates):6.1f} tok/s {spread}  {ratio:.3f}×")
