"""Does the end-to-end phase help nested's budget router, and which controller keeps what it learned?

Loads a `nested` model converted with router=budget and no tuning, evaluates it, then trains its gates end to end
(`ponder.train.tune`: KL to the dense model plus a budget loss) with budgets drawn from [--tune-min, 0.95], and
evaluates again with the closed-loop controller shared by all layers and with one per layer.

Usage: python benchmarks/experiments/tune_variants.py MODEL_DIR [--steps 100] [--tune-min 0.3] [--budgets 0.75,0.5]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from ponder.adaptive import adaptive_modules, load, set_budget
from ponder.data import CALIB_DEFAULT, EVAL_DEFAULT, load_text
from ponder.eval.perplexity import perplexity
from ponder.methods.nested.layer import NestedFFN
from ponder.train.capture import calibration_windows
from ponder.train.tune import tune_gates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--tune-min", type=float, default=0.3)
    parser.add_argument("--budgets", default="0.75,0.5")
    parser.add_argument("--windows", type=int, default=20)
    args = parser.parse_args()
    model, tokenizer = load(args.model)
    modules = adaptive_modules(model)
    text = load_text(CALIB_DEFAULT)
    windows = calibration_windows(tokenizer, text, tokens=8192)
    pool = calibration_windows(tokenizer, text, tokens=len(text))
    evaluation = load_text(EVAL_DEFAULT)
    budgets = [float(b) for b in args.budgets.split(",")]

    def report(label: str) -> None:
        for budget in budgets:
            set_budget(model, budget)
            result = perplexity(model, tokenizer, evaluation, windows=args.windows, progress=False)
            print(f"{label:<34} {budget:5.2f} {result.perplexity:10.2f} {result.ffn_compute:8.3f}", flush=True)
        set_budget(model, 1.0)

    print(f"{'gates':<34} {'budget':>5} {'perplexity':>10} {'compute':>8}")
    report("calibrated per layer (no tuning)")
    drawn = [b for b in modules[0].budget_grid.tolist() if args.tune_min <= b < 1.0]
    with tempfile.TemporaryDirectory() as work:
        tune_gates(model, modules, pool, drawn, steps=args.steps, seed=0, work=Path(work), progress=True)
    for shared in (True, False):
        NestedFFN.control_in_closed_loop(modules, model, windows, shared=shared)
        report(f"tuned {args.steps} steps, {'shared' if shared else 'per-layer'} controller")


if __name__ == "__main__":
    main()
