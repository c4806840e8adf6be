"""FFN compute a converted model spends at a budget in `ponder bench`'s decode (its 64-token prompt, then 128 greedy
tokens) and on that prompt alone, for several models: what the bench's "FFN compute" column is made of.

    python benchmarks/experiments/decode_compute.py DIR [DIR ...] [--budget 0.5]
"""

from __future__ import annotations

import argparse

import torch

from ponder.adaptive import load, set_budget
from ponder.inference import LeanDecoder
from ponder.stats import ComputeMeter
from ponder.timing import prompt_ids


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dirs", nargs="+", help="converted models")
    parser.add_argument("--budget", type=float, default=0.5)
    args = parser.parse_args()
    for directory in args.dirs:
        model, tokenizer = load(directory)
        decoder = LeanDecoder(model, max_len=64 + 128)
        prompt = prompt_ids(tokenizer, 64)
        set_budget(model, args.budget)
        with torch.inference_mode(), ComputeMeter(model) as decode:
            tokens = decoder.generate(prompt, 128)
        with torch.inference_mode(), ComputeMeter(model) as prompt_only:
            model(prompt)
        text = tokenizer.decode(tokens[0, 64:96])
        spent = f"decode {decode.report.ffn_compute:.3f}, prompt alone {prompt_only.report.ffn_compute:.3f}"
        print(f"{directory}: b = {args.budget}, {spent}; it wrote {text!r}")


if __name__ == "__main__":
    main()
