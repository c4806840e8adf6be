"""cats' one-token kernel as committed at a git revision against the working tree's, same process, interleaved
rounds (the first dropped as warm-up), beside the dense kernel, on real SmolLM2 FFN inputs: bare kernel calls with
each layer's calibrated threshold at each budget.

    python benchmarks/experiments/cats_kernel_ab.py DIR [--rev HEAD] [--budgets 0.75,0.5] [--repeats 15] [--tokens 64]
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from kernel_ab import arguments, kernel_at, report, rounds, setup  # benchmarks/ is on sys.path as a script

from ponder.adaptive import set_budget
from ponder.kernels import native


def bare_step(fn: Callable, modules: list, thresholds: list[float]) -> Callable:
    """One token through every layer's `fn` (a `cats_ffn` from some build), scratch sized for any revision."""
    F, D = modules[0].gate.shape
    out, work = torch.empty(D), torch.empty(3 * F + torch.get_num_threads() * D)
    index, counts = torch.empty(F + torch.get_num_threads(), dtype=torch.int64), torch.empty(2, dtype=torch.int64)
    buffers = (out, work, index, counts)  # the closure holds them: a bare data_ptr would not keep them alive
    tail = tuple(b.data_ptr() for b in buffers)
    act = native.ACTIVATIONS[modules[0].activation]
    weights = [(m.gate.data_ptr(), m.up.data_ptr(), m.down_t.data_ptr()) for m in modules]

    def step(token, buffers=buffers):
        for (gate, up, down_t), x, tau in zip(weights, token, thresholds, strict=True):
            fn(x.data_ptr(), gate, up, down_t, None, None, D, F, tau, act, *tail)

    return step


def main() -> None:
    args = arguments("cats", rev="HEAD")
    model, modules, tokens, dense = setup(args.dir, args.tokens)
    new_fn = native.library().cats_ffn
    with tempfile.TemporaryDirectory() as tmp:
        old_fn = kernel_at(args.rev, Path(tmp)).cats_ffn
        steps = {"dense kernel": lambda token: [kernel(x) for kernel, x in zip(dense, token, strict=True)]}
        for budget in [float(b) for b in args.budgets.split(",")]:
            set_budget(model, budget)
            taus = [float(m.threshold_values[0]) for m in modules]
            steps[f"cats {budget}: {args.rev} kernel"] = bare_step(old_fn, modules, taus)
            steps[f"cats {budget}: this kernel"] = bare_step(new_fn, modules, taus)
        rows = rounds(steps, tokens, args.repeats)
    report(rows, f"threads={torch.get_num_threads()} repeats={args.repeats} tokens={args.tokens} rev={args.rev}")


if __name__ == "__main__":
    main()
