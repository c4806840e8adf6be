"""Prefill executors of a converted `moe` model on 512 real tokens through all 30 layers, per budget (same process,
interleaved, median; routing excluded, the same routes for all): the dense FFN, the masked math, the grouped C
kernel (`native.moe_grouped`, what batches run) and PyTorch's expert loop (the fallback; it sets `GROUPED_BELOW`).

    python benchmarks/experiments/moe_prefill.py DIR [--budgets 0.75,0.5,0.35,0.25] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ponder.adaptive import adaptive_modules, load, set_budget
from ponder.data import CALIB_DEFAULT, load_text
from ponder.train.capture import capture_ffn_inputs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("directory")
    parser.add_argument("--budgets", default="0.75,0.5,0.35,0.25")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    model, tokenizer = load(args.directory)
    modules = adaptive_modules(model)
    inputs = capture_ffn_inputs(model, tokenizer, load_text(CALIB_DEFAULT), tokens=512, progress=False)

    def run(executor: str, routes: list) -> float:
        start = time.perf_counter()
        for module, x, (chosen, option) in zip(modules, inputs, routes, strict=True):
            if executor == "dense":
                module.dense_forward(x)
            elif executor == "loop":
                module.compensation(x, chosen, option, out=module._grouped_torch(x, chosen))
            else:
                getattr(module, f"_{executor}")(x, chosen, option)
        return time.perf_counter() - start

    print(f"threads={torch.get_num_threads()} tokens=512 repeats={args.repeats}")
    header = ("budget", "experts run", "dense ms", "masked ms", "C ms", "loop ms", "C ×", "loop ×")
    print(" ".join(f"{h:>11s}" for h in header))
    with torch.inference_mode():
        for budget in [float(b) for b in args.budgets.split(",")]:
            set_budget(model, budget)
            routes = [module.route(x) for module, x in zip(modules, inputs, strict=True)]
            share = statistics.mean(float(chosen.float().mean()) for chosen, _ in routes)
            times: dict[str, list[float]] = {"dense": [], "masked": [], "grouped": [], "loop": []}
            for executor in times:
                run(executor, routes)  # warm-up
            for _ in range(args.repeats):
                for executor in times:
                    times[executor].append(run(executor, routes))
            ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            ratios = [
                statistics.median(d / g for d, g in zip(times["dense"], times[kind], strict=True))
                for kind in ("grouped", "loop")
            ]
            values = (budget, share, ms["dense"], ms["masked"], ms["grouped"], ms["loop"], *ratios)
            print(" ".join(f"{v:11.2f}" for v in values))


if __name__ == "__main__":
    main()
