"""Is a nested model's compute monotone in the budget on real text? For each converted model: the FFN compute it
spends on the first tokens of WikiText-2 test at a fine grid of budgets, how often a higher budget spent less than
the one below it, and the largest such drop; then, per token and layer, how often a token ran fewer learners at
the higher budget of a pair, in all layers and in the first (the only one whose input the budget cannot change:
deeper layers see what the layers before them ran, so a gate monotone in its budget input still need not give a
model monotone in the budget).

    python benchmarks/experiments/nested_monotone.py DIR [DIR ...] [--tokens 2048] [--low 0.2] [--high 1.0]
        [--step 0.01]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from ponder.adaptive import adaptive_modules, load, set_budget
from ponder.data import EVAL_DEFAULT, load_text
from ponder.stats import ComputeMeter


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dirs", nargs="+")
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--low", type=float, default=0.2)
    parser.add_argument("--high", type=float, default=1.0)
    parser.add_argument("--step", type=float, default=0.01)
    args = parser.parse_args()
    budgets = np.round(np.arange(args.low, args.high + 1e-9, args.step), 6).tolist()
    for directory in args.dirs:
        model, tokenizer = load(directory)
        ids = tokenizer(load_text(EVAL_DEFAULT)[: args.tokens * 8], add_special_tokens=False).input_ids
        ids = torch.tensor(ids[: args.tokens]).view(-1, 512)
        modules = adaptive_modules(model)
        learners: list[torch.Tensor] = []  # [layers, N] per budget: what each token ran
        computes = []
        for budget in budgets:
            set_budget(model, budget)
            seen = []
            hooks = [m.register_forward_pre_hook(lambda m, a, seen=seen: seen.append(m.learners_for(
                a[0].reshape(-1, a[0].shape[-1])))) for m in modules]  # fmt: skip
            with ComputeMeter(model) as meter:
                model(ids)
            for hook in hooks:
                hook.remove()
            learners.append(torch.stack(seen))
            computes.append(meter.report.ffn_compute)
        steps = zip(budgets[1:], computes, computes[1:], strict=False)
        drops = ", ".join(f"{lower - higher:.4f} at b = {b}" for b, lower, higher in steps if higher < lower)
        pairs = list(zip(learners, learners[1:], strict=False))
        fewer = sum(int((high < low).sum()) for low, high in pairs)
        first = sum(int((high[0] < low[0]).sum()) for low, high in pairs)
        print(f"{directory}: {len(budgets)} budgets {budgets[0]}-{budgets[-1]} on {ids.numel()} tokens")
        print(f"  compute {computes[0]:.3f} .. {computes[-1]:.3f}; a higher budget spent less: {drops or 'nowhere'}")
        total = len(pairs) * learners[0].numel()
        print(f"  token-layer pairs that ran fewer learners at the next budget: {fewer} of {total}")
        print(f"  the same in the first layer, whose input no budget changes: {first} of {len(pairs) * ids.numel()}")


if __name__ == "__main__":
    main()
