"""cProfile of one lean decode (64-token prompt, 128 new tokens) of a converted model at a budget, after a warm-up
decode: the functions by own time, to find Python overhead on the decode path (e.g. the FFN counting's attribute sets).

    python benchmarks/experiments/decode_profile.py DIR [--budget 0.5] [--top 15]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats

import torch

from ponder.adaptive import load, set_budget
from ponder.inference import LeanDecoder
from ponder.timing import prompt_ids


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dir", help="a converted model")
    parser.add_argument("--budget", type=float, default=0.5)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    model, tokenizer = load(args.dir)
    set_budget(model, args.budget)
    decoder, prompt = LeanDecoder(model, max_len=64 + 128), prompt_ids(tokenizer, 64)
    with torch.inference_mode():
        decoder.generate(prompt, 128)
        profile = cProfile.Profile()
        profile.enable()
        decoder.generate(prompt, 128)
        profile.disable()
    pstats.Stats(profile).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
