"""moe's bound one-token path in the lean decoder against the generic `rows_forward` one (what it used before),
inside the whole decode (64-token prompt, 128 new tokens), beside the model at budget 1; same process, interleaved
rounds, the first dropped as warm-up.

    python benchmarks/experiments/moe_token_path_ab.py DIR [--budget 0.5] [--repeats 7]
"""

from __future__ import annotations

import argparse

from kernel_ab import compare_decodes  # benchmarks/ is on sys.path as a script

from ponder.adaptive import load, set_budget
from ponder.inference import LeanDecoder
from ponder.timing import prompt_ids


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dir", help="a converted moe model")
    parser.add_argument("--budget", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    model, tokenizer = load(args.dir)
    decoder = LeanDecoder(model, max_len=64 + 128)
    layers = decoder.runner.layers
    bound = [layer.ffn_token for layer in layers]
    generic = [(lambda x, module=layer.ffn: module.rows_forward(x[None])[0]) for layer in layers]
    prompt = prompt_ids(tokenizer, 64)

    def decode(paths: list, budget: float):
        def run() -> None:
            set_budget(model, budget)
            for layer, path in zip(layers, paths, strict=True):
                layer.ffn_token = path
            decoder.generate(prompt, 128)

        return run

    cases = {
        "budget 1": decode(bound, 1.0),
        f"moe {args.budget}: rows_forward path": decode(generic, args.budget),
        f"moe {args.budget}: bound path": decode(bound, args.budget),
    }
    compare_decodes(cases, args.repeats)


if __name__ == "__main__":
    main()
