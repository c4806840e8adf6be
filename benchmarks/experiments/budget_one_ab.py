"""Is `ponder bench`'s dense row fair? It times the adaptive model at budget 1; this times that against the model it
came from, same process, interleaved lean decodes (64-token prompt, 128 new tokens; the first round dropped as
warm-up). A second load of the dense model shows how much two copies of the same weights differ by placement alone.

    python benchmarks/experiments/budget_one_ab.py DIR [DIR ...] [--repeats 7]
"""

from __future__ import annotations

import argparse

from kernel_ab import compare_decodes  # benchmarks/ is on sys.path as a script

from ponder.adaptive import load as load_adaptive
from ponder.adaptive import set_budget
from ponder.inference import LeanDecoder
from ponder.models import DEFAULT_MODEL, load
from ponder.timing import prompt_ids


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dirs", nargs="+", help="converted models of the default model")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    dense, tokenizer = load(DEFAULT_MODEL)
    models = {"dense model": dense, "dense model, second load": load(DEFAULT_MODEL)[0]}
    for directory in args.dirs:
        model, _ = load_adaptive(directory)
        set_budget(model, 1.0)
        models[f"{directory} at budget 1"] = model
    prompt = prompt_ids(tokenizer, 64)
    decoders = {name: LeanDecoder(model, max_len=64 + 128) for name, model in models.items()}
    cases = {name: (lambda d=decoder: d.generate(prompt, 128)) for name, decoder in decoders.items()}
    compare_decodes(cases, args.repeats)


if __name__ == "__main__":
    main()
