"""teal's kernel at a git revision against the working tree's inside the whole lean decode (64-token prompt, 128 new
tokens, as `ponder bench`), beside the same model at budget 1; same process, interleaved rounds, the first dropped
as warm-up. The kernel A/B scripts time bare kernel calls; this says what a kernel change is worth end to end.

    python benchmarks/decode_kernel_ab.py DIR [--rev HEAD] [--budgets 0.5] [--repeats 7]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from kernel_ab import compare_decodes, kernel_at  # benchmarks/ is on sys.path as a script

from ponder.adaptive import load, set_budget
from ponder.inference import LeanDecoder
from ponder.inference.bench import prompt_ids
from ponder.kernels import native


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dir", help="a converted teal model")
    parser.add_argument("--rev", default="HEAD")
    parser.add_argument("--budgets", default="0.5")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    model, tokenizer = load(args.dir)
    decoder = LeanDecoder(model, max_len=64 + 128)
    kernels = [layer.ffn_token.kernel for layer in decoder.runner.layers]
    prompt = prompt_ids(tokenizer, 64)

    def decode(budget: float, fn=None):
        def run() -> None:
            set_budget(model, budget)
            for kernel in kernels:
                kernel._fn = fn or kernel._fn
            decoder.generate(prompt, 128)

        return run

    with tempfile.TemporaryDirectory() as tmp:
        old_fn = kernel_at(args.rev, Path(tmp)).teal_ffn
        old_fn.argtypes, old_fn.restype = native.library().teal_ffn.argtypes, None
        new_fn = kernels[0]._fn
        cases = {"dense (budget 1)": decode(1.0)}
        for budget in [float(b) for b in args.budgets.split(",")]:
            cases[f"teal {budget}: {args.rev} kernel"] = decode(budget, old_fn)
            cases[f"teal {budget}: this kernel"] = decode(budget, new_fn)
        compare_decodes(cases, args.repeats)


if __name__ == "__main__":
    main()
