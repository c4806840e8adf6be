"""Refit a tuned moe model's routers to its tuned experts' output norms, recalibrate every budget's knobs, save.

The end-to-end phase trains the experts under routers fitted to the *untuned* experts' norms; this asks whether
routers fitted again to the tuned experts route better. Same data (8,192 tokens of wikitext2-valid), same
regression and knob calibration as the conversion; the router starts from its fitted weights.

    python benchmarks/experiments/moe_router_refit.py SRC DST [--steps 800]
    ponder eval DST --budget 0.5 --windows 20
"""

from __future__ import annotations

import argparse
import time

import torch

from ponder.adaptive import adaptive_modules, load, save_adaptive, set_budget
from ponder.data import CALIB_DEFAULT, load_text
from ponder.methods.calibrate import fit_regressor
from ponder.train.capture import capture_ffn_inputs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("src", help="a tuned moe model directory")
    parser.add_argument("dst")
    parser.add_argument("--steps", type=int, default=800)
    args = parser.parse_args()
    model, tokenizer = load(args.src)
    modules = adaptive_modules(model)
    set_budget(model, 1.0)  # capture the dense residual stream, as the conversion does
    inputs = capture_ffn_inputs(model, tokenizer, load_text(CALIB_DEFAULT), tokens=8192, progress=False)
    start = time.perf_counter()
    for index, (module, x) in enumerate(zip(modules, inputs, strict=True)):
        with torch.no_grad():  # the tuned copies: arrange() put them in place when the model loaded
            targets = torch.cat([module.expert_outputs(chunk).norm(dim=-1) for chunk in x.split(1024)])
        config = module.config
        with torch.enable_grad():
            fit_regressor(module.router, x, targets / targets.std(), steps=args.steps, lr=config.lr, seed=config.seed)
        with torch.no_grad():
            module.calibrate_knobs(module.router(x), module.route_pseudo(x))
        print(f"layer {index}: {time.perf_counter() - start:.0f} s", flush=True)
    save_adaptive(model, args.dst, base_model="smollm2-135m")


if __name__ == "__main__":
    main()
