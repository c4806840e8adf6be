"""teal's decode kernel at a git revision against the working tree's, same process, interleaved rounds, both
called through bound ctypes arguments with the same thresholds, beside the dense kernel on real SmolLM2 inputs.
By default the revision is the first teal kernel (gate|up input-major rows, three parallel regions, no
prefetch); any later one has today's layout (block-interleaved rows, one region, prefetch).

    python benchmarks/experiments/teal_kernel_ab.py DIR [--rev 5bdd099] [--budgets 0.5,0.25] [--repeats 15]
        [--tokens 64]
"""

from __future__ import annotations

import ctypes
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from kernel_ab import arguments, kernel_at, report, setup, timed  # benchmarks/ is on sys.path as a script

from ponder.adaptive import set_budget
from ponder.kernels import native

OLD = "5bdd099"


def first_layout_step(lib: ctypes.CDLL, modules: list, thresholds: list) -> Callable:
    """One token through every layer with the first kernel and its [D, 2F] layout; thresholds[0] is read per
    call, so the caller can set it per budget."""
    hidden, neurons = modules[0].up.shape[1], modules[0].up.shape[0]
    old_layout = [torch.cat([m.gate, m.up]).t().contiguous() for m in modules]  # [D, 2F]
    out, work = torch.empty(hidden), torch.empty(4 * neurons + 2 * hidden)
    index, counts = torch.empty(hidden + neurons, dtype=torch.int64), torch.empty(2, dtype=torch.int64)
    buffers = (out, work, index, counts)  # the closure holds them: a bare data_ptr would not keep them alive
    tail = tuple(b.data_ptr() for b in buffers)

    def step(token, buffers=buffers):
        for m, layout, x, (a, c) in zip(modules, old_layout, token, thresholds[0], strict=True):
            lib.teal_ffn(x.data_ptr(), layout.data_ptr(), m.down_t.data_ptr(), hidden, neurons, 1, a, c,
                         native.ACTIVATIONS[m.activation], *tail)  # fmt: skip

    return step


def bound_step(kernels: list, thresholds: list) -> Callable:
    def step(token):
        for kernel, x, (a, c) in zip(kernels, token, thresholds[0], strict=True):
            kernel(x, a, c)

    return step


def main() -> None:
    args = arguments("teal", rev=OLD)
    model, modules, tokens, dense = setup(args.dir, args.tokens)
    new = [native.TealKernel(m.in_major, m.down_t, m.activation, True) for m in modules]
    thresholds: list = [None]  # this budget's, per layer
    with tempfile.TemporaryDirectory() as tmp:
        if args.rev == OLD:
            run_old = first_layout_step(kernel_at(OLD, Path(tmp)), modules, thresholds)
        else:  # the same layout and arguments: the bound kernels with the old library's function
            old_fn = kernel_at(args.rev, Path(tmp)).teal_ffn
            old = [native.TealKernel(m.in_major, m.down_t, m.activation, True) for m in modules]
            for kernel in old:
                kernel._fn = old_fn
            run_old = bound_step(old, thresholds)
        run_new = bound_step(new, thresholds)

        def run_dense(token):
            for kernel, x in zip(dense, token, strict=True):
                kernel(x)

        budgets = [float(b) for b in args.budgets.split(",")]
        rows: dict[str, list[float]] = {"dense kernel": []}
        with torch.inference_mode():
            for _ in range(args.repeats):
                rows["dense kernel"].append(timed(run_dense, tokens))
                for budget in budgets:
                    set_budget(model, budget)
                    thresholds[0] = [m.threshold_values for m in modules]
                    rows.setdefault(f"teal {budget}: {args.rev} kernel", []).append(timed(run_old, tokens))
                    rows.setdefault(f"teal {budget}: this kernel", []).append(timed(run_new, tokens))
    report(rows, f"threads={torch.get_num_threads()} repeats={args.repeats} tokens={args.tokens}")


if __name__ == "__main__":
    main()
