"""Static slices of a `nested` model (MatFormer / Mix'n'Match): perplexity and batch-1 decode speed of uniform
widths against greedy per-layer widths with the same mean, each slice a plain dense model, timed against the dense
base in the same process, interleaved.

Usage: python benchmarks/experiments/mixnmatch.py NESTED_DIR [--widths 0.75,0.5] [--windows 20] [--repeats 5]
"""

from __future__ import annotations

import argparse

import torch

from ponder.adaptive import load
from ponder.data import EVAL_DEFAULT, load_text
from ponder.eval.perplexity import perplexity
from ponder.inference.decode import LeanDecoder
from ponder.methods.nested.export import greedy_widths, layer_learners, slice_model
from ponder.timing import Rate, paired_ratio, prompt_ids, run_interleaved

PROMPT, NEW = 64, 128


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("nested")
    parser.add_argument("--widths", default="0.75,0.5")
    parser.add_argument("--windows", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    means = [float(w) for w in args.widths.split(",")]
    model, tokenizer = load(args.nested)
    text = load_text(EVAL_DEFAULT)
    slices = {"dense": (1.0, None)}
    for mean, widths in zip(means, greedy_widths(model, tokenizer, means), strict=True):
        slices[f"uniform {mean}"] = (mean, mean)
        slices[f"greedy {mean}"] = (mean, widths)
        print(f"greedy {mean}: learners per layer {layer_learners(model, widths)}")
    models = {name: slice_model(model, 1.0 if w is None else w) for name, (_, w) in slices.items()}
    del model
    prompt = prompt_ids(tokenizer, PROMPT)
    decoders = {name: LeanDecoder(m, max_len=PROMPT + NEW) for name, m in models.items()}
    cases = {name: (lambda d=d: d.generate(prompt, NEW)) for name, d in decoders.items()}
    seconds = run_interleaved(cases, args.repeats, progress=False)
    print(f"{'slice':<14} {'mean width':>10} {'perplexity':>11} {'decode tok/s':>13} {'vs dense':>9}")
    for name, (mean, _) in slices.items():
        with torch.inference_mode():
            ppl = perplexity(models[name], tokenizer, text, windows=args.windows, progress=False).perplexity
        rate = Rate.of(NEW, seconds[name])
        ratio = paired_ratio(seconds["dense"], seconds[name])
        print(f"{name:<14} {mean:>10.2f} {ppl:>11.2f} {rate.median:>13.1f} {ratio:>8.2f}x")


if __name__ == "__main__":
    main()
