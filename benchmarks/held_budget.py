"""Does the FFN compute a model spends on its own answers stay at the budget, with and without the controller?

For each budget, the model answers the same prompts (PIQA goals in the chat template: text no calibration saw)
greedily, once with the calibrated thresholds alone and once under `ponder.control.BudgetController`; the compute
spent on each answer is counted by `ComputeMeter` (prompt and answer tokens both). Prints a table and writes JSON.

    python benchmarks/held_budget.py DIR [--budgets 0.5,0.35] [--prompts 10] [--tokens 96] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

import ponder
from ponder.control import BudgetController
from ponder.eval.tasks import load_piqa
from ponder.inference import LeanDecoder
from ponder.io import write_json_atomic
from ponder.stats import ComputeMeter


def answer_compute(model, decoder, ids: torch.Tensor, tokens: int, controller: BudgetController | None) -> float:
    on_token = None if controller is None else (lambda _: controller.update())
    with ComputeMeter(model) as meter:
        decoder.generate(ids, tokens, on_token=on_token)
    return meter.report.ffn_compute


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a converted directory")
    parser.add_argument("--budgets", default="0.5,0.35")
    parser.add_argument("--prompts", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    model, tokenizer = ponder.load(args.model)
    goals = [item["goal"] for item in load_piqa(args.prompts)]
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": goal}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"]
        for goal in goals
    ]
    rows = []
    for budget in [float(b) for b in args.budgets.split(",")]:
        spent: dict[str, list[float]] = {"free": [], "held": []}
        for ids in prompts:
            decoder = LeanDecoder(model, max_len=ids.shape[1] + args.tokens)
            ponder.set_budget(model, budget)
            spent["free"].append(answer_compute(model, decoder, ids, args.tokens, None))
            spent["held"].append(answer_compute(model, decoder, ids, args.tokens, BudgetController(model, budget)))
        ponder.set_budget(model, budget)
        row = {"budget": budget}
        for mode, values in spent.items():
            row[mode] = {"mean": statistics.mean(values), "min": min(values), "max": max(values)}
        rows.append(row)
        print(
            f"budget {budget}: free {row['free']['mean']:.3f} [{row['free']['min']:.3f}-{row['free']['max']:.3f}]"
            f"  held {row['held']['mean']:.3f} [{row['held']['min']:.3f}-{row['held']['max']:.3f}]",
            flush=True,
        )
    result = {"model": args.model, "prompts": args.prompts, "tokens": args.tokens, "rows": rows}
    if args.json:
        write_json_atomic(args.json, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
