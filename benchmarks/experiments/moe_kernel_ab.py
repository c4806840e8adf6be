"""moe's one-token kernel as committed at a git revision against the working tree's, same process, interleaved
rounds (the first dropped as warm-up), beside the dense kernel (this tree's and the revision's), on real SmolLM2 FFN
inputs (bare kernel calls with the same routes).

    python benchmarks/experiments/moe_kernel_ab.py DIR [--rev HEAD] [--budgets 0.5,0.25] [--repeats 15] [--tokens 64]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from kernel_ab import arguments, kernel_at, report, setup, timed  # benchmarks/ is on sys.path as a script

from ponder.adaptive import set_budget


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

    def run_dense(fn):
        def step(token):
            for kernel, x in zip(dense, token, strict=True):
                kernel._fn = fn
                kernel(x)

        return step

    with tempfile.TemporaryDirectory() as tmp:
        old = kernel_at(args.rev, Path(tmp))
        old_fn, new_dense = old.moe_ffn, dense[0]._fn
        budgets = [float(b) for b in args.budgets.split(",")]
        rows: dict[str, list[float]] = {"dense kernel": []}
        with torch.inference_mode():
            for round_ in range(args.repeats + 1):
                flip = round_ % 2  # odd rounds run the revision's kernel second: no side gains from its place
                times = {}
                for fn in [new_dense, old.glu_dense][:: 1 - 2 * flip]:
                    times["dense kernel" if fn is new_dense else f"dense: {args.rev} kernel"] = timed(
                        run_dense(fn), tokens
                    )
                for budget in budgets:
                    set_budget(model, budget)
                    for fn in [old_fn, new_fn][:: 1 - 2 * flip]:
                        name = f"moe {budget}: {'this' if fn is new_fn else args.rev} kernel"
                        times[name] = timed(run(fn), tokens)
                for name, value in times.items():
                    if round_:  # round 0 warms up
                        rows.setdefault(name, []).append(value)
        for kernel in kernels:
            kernel._fn = new_fn
    pairs = [(f"dense: {args.rev} kernel", "dense kernel")]
    pairs += [(f"moe {b}: {args.rev} kernel", f"moe {b}: this kernel") for b in budgets]
    header = f"threads={torch.get_num_threads()} repeats={args.repeats} tokens={args.tokens} rev={args.rev}"
    report({"dense kernel": rows.pop("dense kernel"), **rows}, header, pairs)


if __name__ == "__main__":
    main()
