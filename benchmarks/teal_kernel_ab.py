"""teal's decode kernel of session 7 (commit 5bdd099: gate|up input-major rows, three parallel regions, no
prefetch) against this one (block-interleaved rows, one region, prefetch), same process, interleaved rounds, both
called through bound ctypes arguments with the same thresholds, beside the dense kernel on real SmolLM2 inputs.

    python benchmarks/teal_kernel_ab.py DIR [--budgets 0.5,0.25] [--repeats 15] [--tokens 64]
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from ponder.adaptive import adaptive_modules, load, set_budget
from ponder.data import CALIB_DEFAULT, load_text
from ponder.kernels import native
from ponder.train.capture import capture_ffn_inputs

OLD = "5bdd099"


def old_kernel(directory: Path) -> ctypes.CDLL:
    source = directory / "old.c"
    source.write_bytes(subprocess.run(["git", "show", f"{OLD}:src/ponder/kernels/sparse_ffn.c"], check=True,
                                      capture_output=True).stdout)  # fmt: skip
    native._build(directory / "old.so", source)
    lib = ctypes.CDLL(str(directory / "old.so"))
    pointer, i64 = ctypes.c_void_p, ctypes.c_int64
    lib.teal_ffn.argtypes = [pointer] * 3 + [i64, i64, ctypes.c_int, ctypes.c_float, ctypes.c_float, ctypes.c_int]
    lib.teal_ffn.argtypes += [pointer] * 4
    return lib


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dir", help="a converted teal model (SwiGLU)")
    parser.add_argument("--budgets", default="0.5,0.25")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    model, tokenizer = load(args.dir)
    modules = adaptive_modules(model)
    inputs = capture_ffn_inputs(model, tokenizer, load_text(CALIB_DEFAULT), tokens=1024, progress=False)
    tokens = [[layer[64 + t].clone() for layer in inputs] for t in range(args.tokens)]
    hidden, neurons = modules[0].up.shape[1], modules[0].up.shape[0]
    dense = [native.DenseKernel(m.gate, m.up, m.down, None, None, m.activation) for m in modules]
    new = [native.TealKernel(m.in_major, m.down_t, m.activation, True) for m in modules]
    with tempfile.TemporaryDirectory() as tmp:
        lib = old_kernel(Path(tmp))
        old_layout = [torch.cat([m.gate, m.up]).t().contiguous() for m in modules]  # [D, 2F]
        out, work = torch.empty(hidden), torch.empty(4 * neurons + 2 * hidden)
        index, counts = torch.empty(hidden + neurons, dtype=torch.int64), torch.empty(2, dtype=torch.int64)
        tail = (out.data_ptr(), work.data_ptr(), index.data_ptr(), counts.data_ptr())

        def timed(step) -> float:
            start = time.perf_counter()
            for token in tokens:
                step(token)
            return (time.perf_counter() - start) / len(tokens) * 1e3

        def run_old(token):
            for m, layout, x, (a, c) in zip(modules, old_layout, token, thresholds, strict=True):
                lib.teal_ffn(x.data_ptr(), layout.data_ptr(), m.down_t.data_ptr(), hidden, neurons, 1, a, c,
                             native.ACTIVATIONS[m.activation], *tail)  # fmt: skip

        def run_new(token):
            for kernel, x, (a, c) in zip(new, token, thresholds, strict=True):
                kernel(x, a, c)

        def run_dense(token):
            for kernel, x in zip(dense, token, strict=True):
                kernel(x)

        budgets = [float(b) for b in args.budgets.split(",")]
        rows: dict[str, list[float]] = {"dense kernel": []}
        with torch.inference_mode():
            for _ in range(args.repeats):
                rows["dense kernel"].append(timed(run_dense))
                for budget in budgets:
                    set_budget(model, budget)
                    thresholds = [m.threshold_values for m in modules]
                    rows.setdefault(f"teal {budget}: {OLD} kernel", []).append(timed(run_old))
                    rows.setdefault(f"teal {budget}: this kernel", []).append(timed(run_new))
    print(f"threads={torch.get_num_threads()} repeats={args.repeats} tokens={args.tokens}")
    for name, times in rows.items():
        ratio = statistics.median(d / t for d, t in zip(rows["dense kernel"], times, strict=True))
        spread = f"({min(times):.2f}-{max(times):.2f})"
        print(f"{name:28s} {statistics.median(times):7.2f} ms/token  {spread}  {ratio:5.2f}× dense")


if __name__ == "__main__":
    main()
