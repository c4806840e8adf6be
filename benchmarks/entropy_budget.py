"""Does an entropy-driven budget (`--budget auto:B`) beat a fixed budget at the same measured FFN compute?

Every run scores the same WikiText-2 test windows a token at a time through the lean KV cache: the fixed budget B,
auto:B (bins and budgets calibrated on wikitext2-valid, cached), and the fixed budget one grid step (0.05) to the
side of auto's measured compute. The fixed runs' window losses are interpolated linearly in compute to auto's, and
the paired per-window differences (auto minus fixed at equal compute) give the mean gain and a 95 % bootstrap
interval over windows. About 20 s a window per run on two cores: some 20 minutes at the defaults.

    python benchmarks/entropy_budget.py DIR [--mean 0.5] [--windows 20] [--window-len 1024] [--bins 4]
        [--spread 0.2] [--out runs/entropy-budget]
"""

from __future__ import annotations

import argparse
import datetime
import math
import random
import shlex
import statistics
import sys
from pathlib import Path

import torch

from ponder.adaptive import load, set_budget
from ponder.data import CALIB_DEFAULT, load_text
from ponder.entropy_budget import STEP, cached_calibration, stepwise_perplexity
from ponder.io import write_json_atomic, write_text_atomic


def bootstrap_interval(values: list[float], rounds: int = 10000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of the mean of `values`, resampling windows."""
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(values, k=len(values))) for _ in range(rounds))
    return means[int(0.025 * rounds)], means[int(0.975 * rounds) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a converted directory (e.g. from `ponder convert ... --method teal`)")
    parser.add_argument("--mean", type=float, default=0.5)
    parser.add_argument("--windows", type=int, default=20)
    parser.add_argument("--window-len", type=int, default=1024)
    parser.add_argument("--bins", type=int, default=4)
    parser.add_argument("--spread", type=float, default=0.2)
    parser.add_argument("--out", type=Path, default=Path("runs/entropy-budget"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    model, tokenizer = load(args.model)
    text = load_text("wikitext2")
    set_budget(model, args.mean)
    policy = cached_calibration(
        model, tokenizer, load_text(CALIB_DEFAULT), args.mean, bins=args.bins, spread=args.spread
    )
    print(f"auto:{args.mean:g}: entropy edges {policy.edges}, budgets {policy.levels}", flush=True)

    def scored(budget: float | None) -> dict:
        if budget is not None:
            set_budget(model, budget)
        result = stepwise_perplexity(
            model, tokenizer, text, policy=None if budget is not None else policy, windows=args.windows,
            window_len=args.window_len,
        )  # fmt: skip
        row = result.as_dict() | {"run": "auto" if budget is None else f"fixed {budget:g}"}
        print(f"{row['run']}: perplexity {row['perplexity']:.3f} at FFN compute {row['ffn_compute']:.4f}", flush=True)
        return row

    fixed = scored(args.mean)
    auto = scored(None)
    side = round(args.mean + (STEP if auto["ffn_compute"] > fixed["ffn_compute"] else -STEP), 6)
    neighbour = scored(side)
    span = neighbour["ffn_compute"] - fixed["ffn_compute"]
    weight = (auto["ffn_compute"] - fixed["ffn_compute"]) / span
    matched = [
        (1 - weight) * a + weight * b for a, b in zip(fixed["window_nlls"], neighbour["window_nlls"], strict=True)
    ]
    gains = [m - a for m, a in zip(matched, auto["window_nlls"], strict=True)]  # > 0: auto's loss is lower
    low, high = bootstrap_interval(gains)
    gain = statistics.fmean(gains)
    result = {
        "command": shlex.join(["python", *sys.argv]),
        "date": datetime.date.today().isoformat(),
        "policy": policy.as_dict(),
        "runs": [fixed, auto, neighbour],
        "matched_fixed_perplexity": math.exp(statistics.fmean(matched)),
        "interpolation_weight": weight,
        "gain_nats": gain,
        "gain_interval_nats": [low, high],
        "perplexity_change": math.exp(-gain) - 1,
        "perplexity_change_interval": [math.exp(-high) - 1, math.exp(-low) - 1],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "entropy-budget.json", result)
    lines = [
        f"`{result['command']}` ({result['date']}): {args.windows} windows × {args.window_len} tokens of WikiText-2 "
        "test, scored a token at a time.",
        "",
        "| run | FFN compute | perplexity |",
        "|---|---:|---:|",
        *(f"| {r['run']} | {r['ffn_compute']:.4f} | {r['perplexity']:.3f} |" for r in result["runs"]),
        f"| fixed, interpolated to auto's compute | {auto['ffn_compute']:.4f} | "
        f"{result['matched_fixed_perplexity']:.3f} |",
        "",
        f"auto against fixed at the same compute: perplexity {100 * result['perplexity_change']:+.2f} % "
        f"(95 % interval over windows {100 * result['perplexity_change_interval'][0]:+.2f} % to "
        f"{100 * result['perplexity_change_interval'][1]:+.2f} %). Bins: entropy edges {policy.edges} nats, "
        f"budgets {policy.levels}.",
    ]
    write_text_atomic(args.out / "entropy-budget.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
