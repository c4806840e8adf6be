"""teal's or moe's kernel at a git revision against the working tree's inside the whole lean decode (64-token
prompt, 128 new tokens, as `ponder bench`), beside the same model at budget 1; same process, interleaved rounds, the
first dropped as warm-up. The kernel A/B scripts time bare kernel calls; this says what a kernel change is worth end
to end.

    python benchmarks/experiments/decode_kernel_ab.py DIR [--rev HEAD] [--budgets 0.5] [--repeats 7]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from kernel_ab import compare_decodes, decode_arguments, kernel_at  # benchmarks/ is on sys.path as a script

from ponder.adaptive import adaptive_modules, load, set_budget
from ponder.inference import LeanDecoder
from ponder.state import method_name
from ponder.timing import prompt_ids


def main() -> None:
    args = decode_arguments("teal or moe")
    model, tokenizer = load(args.dir)
    method = method_name(model)
    decoder = LeanDecoder(model, max_len=64 + 128)
    prompt = prompt_ids(tokenizer, 64)
    if method == "teal":
        kernels = [layer.ffn_token.kernel for layer in decoder.runner.layers]
    else:  # moe builds each layer's kernel on its first sparse token
        set_budget(model, 0.5)
        decoder.generate(prompt, 2)  # the second token is the first one-token step
        kernels = [module._kernel for module in adaptive_modules(model)]
    symbol = {"teal": "teal_ffn", "moe": "moe_ffn"}[method]

    def decode(budget: float, fn=None):
        def run() -> None:
            set_budget(model, budget)
            for kernel in kernels:
                kernel._fn = fn or kernel._fn
            decoder.generate(prompt, 128)

        return run

    with tempfile.TemporaryDirectory() as tmp:
        old_fn = getattr(kernel_at(args.rev, Path(tmp)), symbol)
        new_fn = kernels[0]._fn
        cases = {"dense (budget 1)": decode(1.0)}
        for budget in [float(b) for b in args.budgets.split(",")]:
            cases[f"{method} {budget}: {args.rev} kernel"] = decode(budget, old_fn)
            cases[f"{method} {budget}: this kernel"] = decode(budget, new_fn)
        compare_decodes(cases, args.repeats)


if __name__ == "__main__":
    main()
