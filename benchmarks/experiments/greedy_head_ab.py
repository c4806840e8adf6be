"""The lean decoder's head: the full fp32 GEMV + argmax against the int8-screened greedy head (`native.GreedyHead`),
toggled on the same decoder objects, interleaved round by round (64-token prompt, 128 new tokens). With converted
models, each also at a budget, so the adaptive/dense ratio can be read under either head. Checks that both heads
give the same tokens, and counts how many rows the screen sent to the exact fp32 recompute.

    python benchmarks/experiments/greedy_head_ab.py [DIR ...] [--budget 0.5] [--repeats 9]
"""

from __future__ import annotations

import argparse
import statistics

import torch

from ponder.adaptive import load as load_adaptive
from ponder.adaptive import set_budget
from ponder.inference import LeanDecoder
from ponder.models import DEFAULT_MODEL, load
from ponder.timing import cpu_name, prompt_ids, run_interleaved

NEW_TOKENS = 128


def recompute_counts(decoder: LeanDecoder, prompt: torch.Tensor) -> list[int]:
    """Per decode step, the rows whose screening interval reached the top (the kernel recomputes those in fp32)."""
    head = decoder.runner.greedy_head
    counts = []

    def counting(h: torch.Tensor) -> int:
        token = head(h)
        counts.append(head.recomputed)
        return token

    decoder.runner.greedy_head = counting
    decoder.generate(prompt, NEW_TOKENS)
    decoder.runner.greedy_head = head
    return counts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dirs", nargs="*", help="converted models of the default model")
    parser.add_argument("--budget", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    dense, tokenizer = load(DEFAULT_MODEL)
    prompt = prompt_ids(tokenizer, 64)
    runs = {"dense": (dense, 1.0)} | {f"{d} b={args.budget}": (load_adaptive(d)[0], args.budget) for d in args.dirs}
    decoders = {name: LeanDecoder(model, max_len=64 + NEW_TOKENS) for name, (model, _) in runs.items()}
    heads = {name: decoder.runner.greedy_head for name, decoder in decoders.items()}

    def case(name: str, screened: bool):
        model, budget = runs[name]
        decoder = decoders[name]

        def run() -> torch.Tensor:
            if model is not dense:
                set_budget(model, budget)
            decoder.runner.greedy_head = heads[name] if screened else None
            return decoder.generate(prompt, NEW_TOKENS)

        return run

    cases = {}
    for name in runs:
        full, screened = case(name, False), case(name, True)
        assert torch.equal(full(), screened()), f"{name}: the screened head changed the tokens"
        cases[f"{name}, full head"], cases[f"{name}, screened head"] = full, screened
    with torch.inference_mode():
        counts = {name: recompute_counts(decoders[name], prompt) for name in runs}
        seconds = run_interleaved(cases, args.repeats, progress=False)
    print(f"{cpu_name()}, {torch.get_num_threads()} threads, {args.repeats} rounds, {NEW_TOKENS} new tokens after 64")
    print("tokens identical under both heads: yes (checked for every model)")
    for name, times in seconds.items():
        rates = [NEW_TOKENS / t for t in times]
        print(f"{name:56s} {statistics.median(rates):6.1f} tok/s ({min(rates):.1f}-{max(rates):.1f})")

    def ratio(reference: str, candidate: str) -> float:
        return statistics.median(r / c for r, c in zip(seconds[reference], seconds[candidate], strict=True))

    for name in runs:
        c, gain = counts[name], ratio(f"{name}, full head", f"{name}, screened head")
        print(f"{name}: screened / full head {gain:.3f}×; rows recomputed a step: median {statistics.median(c)}, "
              f"mean {statistics.mean(c):.2f}, max {max(c)}")  # fmt: skip
    for name in list(runs)[1:]:
        for head in ("full head", "screened head"):
            print(f"{name} / dense, {head}: {ratio(f'dense, {head}', f'{name}, {head}'):.3f}×")


if __name__ == "__main__":
    main()
