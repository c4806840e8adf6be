"""What one step of moe's end-to-end phase costs three ways, same process, interleaved: the KL over whole logits
(the phase's first version), the KL through the output head in chunks (`ponder.train.head_kl`, now), and that
under bfloat16 autocast (`--set tune_precision=bfloat16`). One step = the teacher forward at budget 1, the student
forward at --budget, the loss and the backward, on the phase's 2 × 512 calibration tokens; the first round is
warm-up. Also prints how far each variant's gradient is from the whole-logits one, and how far two batches'
gradients are from each other (the scale of the noise a step already has).

    python benchmarks/experiments/tune_step_ab.py MOE_DIR [--repeats 5] [--budget 0.5]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

from ponder.adaptive import adaptive_modules, load
from ponder.data import CALIB_DEFAULT, load_text
from ponder.train import tune
from ponder.train.capture import calibration_windows
from ponder.train.head_kl import logits_kl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--budget", type=float, default=0.5)
    args = parser.parse_args()
    model, tokenizer = load(args.model)
    modules = adaptive_modules(model)
    windows = calibration_windows(tokenizer, load_text(CALIB_DEFAULT), tokens=8192)
    trained = [t for m in modules for t in m.tunable().values()]
    model.requires_grad_(False)
    for tensor in trained:
        tensor.requires_grad_(True)

    def set_all(budget: float) -> None:
        for module in modules:
            module.set_budget(budget)

    set_all(1.0)
    head = tune._comparison(model, windows)
    assert head[1] is not logits_kl, "this model's logits are not a linear head: nothing to compare"
    variants = {
        "whole logits": ((lambda x: model(x).logits), logits_kl, contextlib.nullcontext),
        "head, chunked": (*head, contextlib.nullcontext),
        "head, bfloat16": (*head, lambda: torch.autocast("cpu", dtype=torch.bfloat16)),
    }

    def step(name: str, rows: torch.Tensor) -> tuple[float, torch.Tensor]:
        outputs, divergence, precision = variants[name]
        for tensor in trained:
            tensor.grad = None
        start = time.perf_counter()
        with precision():
            set_all(1.0)
            with torch.no_grad():
                teacher = outputs(rows)
            set_all(args.budget)
            loss = divergence(teacher, outputs(rows))
        loss.backward()
        seconds = time.perf_counter() - start
        return seconds, torch.cat([t.grad.flatten() for t in trained])

    times: dict[str, list[float]] = {name: [] for name in variants}
    grads: dict[str, torch.Tensor] = {}
    for repeat in range(args.repeats + 1):
        for name in variants:
            seconds, grads[name] = step(name, windows[:2])
            if repeat:
                times[name].append(seconds)
    other = step("whole logits", windows[2:4])[1]
    reference = grads["whole logits"]
    base = statistics.median(times["whole logits"])
    print(f"{args.model}, budget {args.budget}, {args.repeats} rounds after a warm-up")
    for name, seconds in times.items():
        distance = float((grads[name] - reference).norm() / reference.norm())
        median = statistics.median(seconds)
        print(f"{name:16s} {median:6.2f} s a step ({min(seconds):.2f}-{max(seconds):.2f})  "
              f"{base / median:.2f}x  gradient {distance:.1e} from whole logits")  # fmt: skip
    spread = float((other - reference).norm() / reference.norm())
    print(f"two batches' gradients (whole logits) differ by {spread:.2f}")


if __name__ == "__main__":
    main()
