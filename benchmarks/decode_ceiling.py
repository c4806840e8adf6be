"""The most any FFN executor can gain in a lean decode step on this machine, beside what converted models gain.

Question: how much of the possible decode saving does each executor capture? About 10 minutes for three
models at --repeats 15.

The ceiling (`ponder.inference.ceiling`; `ponder bench --ceiling` runs it per budget): every layer's FFN replaced by
the dense kernel over a pre-sliced, contiguous fraction f of its neurons (f of the FFN's bytes, one stream per
matrix, no choosing, no gather). No width method can read fewer bytes at
compute f, or read them faster than the dense kernel reads them, so dense / sliced is the ceiling of its decode
ratio at f (the sliced model's tokens are nonsense; its step costs what any f-wide step costs). Each converted model
DIR runs as `ponder bench` runs it: its decode at --budget against itself at budget 1, and the FFN compute that decode
spent. Everything greedy, 64-token prompt, the screened head, one process, interleaved rounds after a warm-up round;
timed are the decode steps after the prompt's prefill (which the sliced kernels do not run).

    python benchmarks/decode_ceiling.py [DIR ...] [--budget 0.5] [--fractions 0.5,0.583,0.25] [--repeats 11]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ponder import adaptive
from ponder.inference import LeanDecoder
from ponder.inference.ceiling import ffn_paths, sliced_paths
from ponder.models import DEFAULT_MODEL, load
from ponder.stats import ComputeMeter
from ponder.timing import paired_ratio, prompt_ids


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dirs", nargs="*", help="converted models to run beside the ceiling")
    parser.add_argument("--budget", type=float, default=0.5)
    parser.add_argument("--fractions", default="0.5,0.583,0.25")
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--new-tokens", type=int, default=128)
    args = parser.parse_args()
    model, tokenizer = load(DEFAULT_MODEL)
    prompt = prompt_ids(tokenizer, 64)
    dense = LeanDecoder(model, max_len=64 + args.new_tokens)

    def decode_seconds(decoder: LeanDecoder) -> float:
        """Seconds of the decode steps after the prompt's prefill: from the first token chosen to the last."""
        first: list[float] = []
        decoder.generate(prompt, args.new_tokens, on_token=lambda _: first or first.append(time.perf_counter()))
        return time.perf_counter() - first[0]

    def sliced(fraction: float) -> Callable[[], float]:
        paths = sliced_paths(dense, fraction)

        def run() -> float:
            with ffn_paths(dense, paths):
                return decode_seconds(dense)

        return run

    cases: dict[str, Callable[[], float]] = {"dense": lambda: decode_seconds(dense)}
    pairs = []  # (case, its reference)
    for fraction in (float(f) for f in args.fractions.split(",")):
        cases[f"sliced {fraction:.3f}"] = sliced(fraction)
        pairs.append((f"sliced {fraction:.3f}", "dense"))
    spent = {}
    for directory in args.dirs:
        converted, _ = adaptive.load(directory)
        decoder = LeanDecoder(converted, max_len=64 + args.new_tokens)
        for budget in (1.0, args.budget):

            def run(converted=converted, decoder=decoder, budget=budget) -> float:
                adaptive.set_budget(converted, budget)
                return decode_seconds(decoder)

            cases[f"{Path(directory).name} @ {budget}"] = run
        name = f"{Path(directory).name} @ {args.budget}"
        pairs.append((name, f"{Path(directory).name} @ 1.0"))
        adaptive.set_budget(converted, args.budget)
        with ComputeMeter(converted) as meter:
            decoder.generate(prompt, args.new_tokens)
        spent[name] = meter.report.ffn_compute
    seconds: dict[str, list[float]] = {name: [] for name in cases}
    with torch.inference_mode():
        for run in cases.values():
            run()  # warm-up round
        for _ in range(args.repeats):
            for name, run in cases.items():
                seconds[name].append(run())
    steps = args.new_tokens - 1
    print(f"threads={torch.get_num_threads()} repeats={args.repeats} decode steps={steps} (ms a step)")
    for name, t in seconds.items():
        print(f"{name:24s} {statistics.median(t) * 1e3 / steps:6.2f} ms  ({min(t) * 1e3 / steps:.2f}-"
              f"{max(t) * 1e3 / steps:.2f})")  # fmt: skip
    for name, reference in pairs:
        compute = f", FFN compute spent {spent[name]:.3f}" if name in spent else ""
        print(f"{reference} / {name}: {paired_ratio(seconds[reference], seconds[name]):.3f}{compute}")


if __name__ == "__main__":
    main()
