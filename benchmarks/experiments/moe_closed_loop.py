"""moe's knobs calibrated again in closed loop (`MoEFFN.knobs_in_closed_loop`) on a model converted before that
step existed: FFN compute spent at budgets 0.25 / 0.5 / 0.75 on the calibration text (each half and all of it) before
and after, and the time it took; the recalibrated model is saved to OUT for evaluation. Without OUT: only what DIR
spends (for a model converted with the closed loop).

    python benchmarks/experiments/moe_closed_loop.py DIR [OUT]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ponder.adaptive import CONFIG_FILE, adaptive_modules, load, save_adaptive, set_budget
from ponder.data import load_text
from ponder.methods.moe.layer import MoEFFN
from ponder.state import adaptive_state
from ponder.stats import ComputeMeter
from ponder.train.capture import calibration_windows

BUDGETS = (0.25, 0.5, 0.75)


def spent(model, windows: torch.Tensor) -> dict[str, list[float]]:
    """FFN compute at each budget over the first half, the second half and all of `windows`."""
    halves = {"first half": windows[: len(windows) // 2], "second half": windows[len(windows) // 2 :]}
    result: dict[str, list[float]] = {name: [] for name in (*halves, "all")}
    for budget in BUDGETS:
        set_budget(model, budget)
        macs = []
        for name, part in halves.items():
            with torch.no_grad(), ComputeMeter(model) as meter:
                for window in part:
                    model(window[None])
            result[name].append(meter.report.ffn_compute)
            macs.append(meter.report.ffn_compute * part.numel())
        result["all"].append(sum(macs) / windows.numel())
    return result


def show(label: str, result: dict[str, list[float]]) -> None:
    for name, values in result.items():
        print(f"{label:7s} {name:12s} " + "  ".join(f"b={b}: {v:.4f}" for b, v in zip(BUDGETS, values, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dir", help="a converted moe model")
    parser.add_argument("out", nargs="?", help="where the recalibrated model is saved")
    args = parser.parse_args()
    model, tokenizer = load(args.dir)
    calibration = adaptive_state(model).calibration
    windows = calibration_windows(tokenizer, load_text(calibration["data"]), tokens=calibration["tokens"])
    show("before" if args.out else "as is", spent(model, windows))
    if not args.out:
        return
    start = time.perf_counter()
    MoEFFN.knobs_in_closed_loop(adaptive_modules(model), model, windows, progress=False)
    print(f"closed loop: {time.perf_counter() - start:.0f} s on {windows.numel()} calibration tokens")
    show("after", spent(model, windows))
    set_budget(model, 1.0)
    saved = json.loads((Path(args.dir) / CONFIG_FILE).read_text())
    save_adaptive(model, args.out, base_model=saved["base_model"])


if __name__ == "__main__":
    main()
