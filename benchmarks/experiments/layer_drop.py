"""Static depth baseline for `skip`: drop the same layers for every token (those whose mean relative update on
calibration text is smallest), with no stand-in and with the per-channel affine stand-in, at the FFN compute of
the per-token gate's budgets. Answers whether per-token layer choice beats a static one on this model.

Usage: python benchmarks/experiments/layer_drop.py [MODEL] [--compute 0.9,0.75,0.5] [--windows 20]
"""

from __future__ import annotations

import argparse

import torch

from ponder.adaptive import load
from ponder.data import CALIB_DEFAULT, EVAL_DEFAULT, load_text
from ponder.eval.perplexity import perplexity
from ponder.methods.skip.layer import fit_stand_in
from ponder.models.targets import decoder_layers
from ponder.train.capture import calibration_windows, iter_captures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="smollm2-135m")
    parser.add_argument("--compute", default="0.9,0.75,0.5")
    parser.add_argument("--windows", type=int, default=20)
    parser.add_argument("--calib-tokens", type=int, default=4096)
    args = parser.parse_args()
    model, tokenizer = load(args.model)
    layers = decoder_layers(model)
    windows = calibration_windows(tokenizer, load_text(CALIB_DEFAULT), tokens=args.calib_tokens)
    captured = iter_captures(model, windows, progress=False, point="residual")
    residual = [torch.cat(parts) for parts in zip(*captured, strict=True)]  # L + 1 points of the residual stream
    inputs = residual[:-1]
    updates = [after - before for before, after in zip(inputs, residual[1:], strict=True)]
    relative = [float((u.norm(dim=-1) / x.norm(dim=-1)).mean()) for x, u in zip(inputs, updates, strict=True)]
    stand_ins = [fit_stand_in(x, u, affine=True) for x, u in zip(inputs, updates, strict=True)]
    print("mean relative update per layer:", " ".join(f"{r:.2f}" for r in relative))
    order = sorted(range(len(layers)), key=relative.__getitem__)
    text = load_text(EVAL_DEFAULT)
    print(f"{'FFN compute':>11} {'dropped layers':<44} {'no stand-in':>11} {'affine':>9}")
    for compute in (float(c) for c in args.compute.split(",")):
        dropped = sorted(order[: round((1 - compute) * len(layers))])
        results = []
        for affine in (False, True):

            def drop(index: int, affine: bool = affine):
                scale, shift = stand_ins[index]
                return lambda module, args, kwargs, out: args[0] + (args[0] * scale + shift if affine else 0)

            handles = [layers[i].register_forward_hook(drop(i), with_kwargs=True) for i in dropped]
            try:
                with torch.inference_mode():
                    results.append(perplexity(model, tokenizer, text, windows=args.windows, progress=False))
            finally:
                for handle in handles:
                    handle.remove()
        kept = 1 - len(dropped) / len(layers)
        names = ",".join(map(str, dropped))
        print(f"{kept:>11.3f} {names:<44} {results[0].perplexity:>11.2f} {results[1].perplexity:>9.2f}")


if __name__ == "__main__":
    main()
