"""moe's one-token kernel as committed at a git revision against the working tree's, same process, interleaved
rounds (the first dropped as warm-up), beside the dense kernel, on real SmolLM2 FFN inputs (bare kernel calls with
the same routes).

    python benchmarks/moe_kernel_ab.py DIR [--rev HEAD] [--budgets 0.5,0.25] [--repeats 15] [--tokens 64]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from kernel_ab import arguments, kernel_at, report, setup, timed  # benchmarks/ is on sys.path as a script

from ponder.adaptive import set_budget
from ponder.kernels import native


def main() -> None:
    args = arguments("moe", rev="HEAD")
    model, modules, tokens, dense = setup(args.dir, args.tokens)
    with torch.inference_mode():
        for m, x in zip(modules, tokens[0], strict=True):
            m._decode(x[None])  # builds each module's kernel
    kernels = [m._kernel for m in modules]
    new_fn = kernels[0]._fn

    def run(fn):
        def step(token):
            for m, kernel, x in zip(modules, kernels, token, strict=True):
                kernel._fn = fn
                kernel(x, m._policy_index, m.knob())

        return step

    def run_dense(token):
        for kernel, x in zip(dense, token, strict=True):
            kernel(x)

    with tempfile.TemporaryDirectory() as tmp:
        old_fn = kernel_at(args.rev, Path(tmp)).moe_ffn
        old_fn.argtypes, old_fn.restype = native.library().moe_ffn.argtypes, None
        rows: dict[str, list[float]] = {"dense kernel": []}
        with torch.inference_mode():
            for round_ in range(args.repeats + 1):
                times = {"dense kernel": timed(run_dense, tokens)}
                for budget in [float(b) for b in args.budgets.split(",")]:
                    set_budget(model, budget)
                    times[f"moe {budget}: {args.rev} kernel"] = timed(run(old_fn), tokens)
                    times[f"moe {budget}: this kernel"] = timed(run(new_fn), tokens)
                for name, value in times.items():
                    if round_:  # round 0 warms up
                        rows.setdefault(name, []).append(value)
        for kernel in kernels:
            kernel._fn = new_fn
    report(rows, f"threads={torch.get_num_threads()} repeats={args.repeats} tokens={args.tokens} rev={args.rev}")


if __name__ == "__main__":
    main()
