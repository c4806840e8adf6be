"""The whole kernel library (`sparse_ffn.c` and its compiler flags) at a git revision against the working tree's, in
the whole lean decode (64-token prompt, 128 new tokens, as `ponder bench`): dense (budget 1) and each budget under
each library, same process, interleaved rounds, the first dropped as warm-up. A change that speeds up every kernel
(the dot product, the flags) speeds up the dense baseline too: this says what it does to the ratio `ponder bench`
reports, which the per-kernel A/Bs cannot. Caution: an A/A run (--rev HEAD with an unchanged kernel) reported this tree
8-9 % faster on both rows (benchmarks/results/library-ab-aa-s20.txt); read a result only beside an A/A.

    python benchmarks/experiments/library_ab.py DIR [--rev HEAD] [--budgets 0.5] [--repeats 7]
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from kernel_ab import decode_arguments, kernel_at  # benchmarks/ is on sys.path as a script

from ponder.adaptive import adaptive_modules, load, set_budget
from ponder.inference import LeanDecoder
from ponder.kernels import native
from ponder.timing import cpu_name, prompt_ids, run_interleaved


def main() -> None:
    args = decode_arguments("adaptive")
    budgets = [1.0, *(float(b) for b in args.budgets.split(","))]
    current = native.library()
    model, tokenizer = load(args.dir)  # one model, so both libraries read the same weights at the same addresses
    prompt = prompt_ids(tokenizer, 64)
    modules = [m for m in adaptive_modules(model) if hasattr(m, "_kernel")]  # moe builds its kernel on first use
    with tempfile.TemporaryDirectory() as tmp:
        libraries = {args.rev: kernel_at(args.rev, Path(tmp)), "this tree": current}
        # A, B, B, A: whichever decoder was built later ran faster with identical libraries (A/A runs), so
        # each library gets one early and one late copy, and the copies' times are multiplied in the comparisons
        worlds = [(args.rev, 0), ("this tree", 0), ("this tree", 1), (args.rev, 1)]
        cases: dict[str, Callable[[], object]] = {}
        for name, copy in worlds:
            lib = libraries[name]
            native.library = lambda lib=lib: lib  # every kernel built below binds this library
            decoder = LeanDecoder(model, max_len=64 + 128)
            for module in modules:
                module._kernel = None
            set_budget(model, min(budgets))
            decoder.generate(prompt, 2)  # builds the modules' kernels (the second token is the first one-token step)
            kernels = [module._kernel for module in modules]
            for budget in budgets:
                cases[f"{budget} {name} {copy}"] = _decode(lib, kernels, modules, model, decoder, prompt, budget)
        with torch.inference_mode():
            seconds = run_interleaved(cases, args.repeats, progress=False)
    print(f"{cpu_name()}, {torch.get_num_threads()} threads, {args.repeats} rounds, 128 new tokens after 64")

    def paired(key: str) -> list[float]:  # per round, the geometric mean of the two copies' times
        return [(a * b) ** 0.5 for a, b in zip(seconds[f"{key} 0"], seconds[f"{key} 1"], strict=True)]

    for name in libraries:
        dense = paired(f"1.0 {name}")
        for budget in budgets:
            times = paired(f"{budget} {name}")
            ratio = statistics.median(d / t for d, t in zip(dense, times, strict=True))
            print(f"{name:12s} budget {budget:<5} {statistics.median(128 / t for t in times):6.1f} tok/s  "
                  f"{ratio:.3f}× its dense")  # fmt: skip
    for budget in budgets:
        old, new = paired(f"{budget} {args.rev}"), paired(f"{budget} this tree")
        gain = statistics.median(o / n for o, n in zip(old, new, strict=True))
        print(f"budget {budget}: this tree {gain:.3f}× {args.rev}")


def _decode(lib, kernels: list, modules: list, model, decoder, prompt: torch.Tensor, budget: float) -> Callable:
    def run() -> object:
        native.library = lambda: lib
        for module, kernel in zip(modules, kernels, strict=True):
            module._kernel = kernel
        set_budget(model, budget)
        return decoder.generate(prompt, 128)

    return run


if __name__ == "__main__":
    main()
