"""Is the MoE router the bottleneck? Per layer, the relative FFN-output error on held-out tokens (WikiText-2 test)
when half of the neurons run, chosen by: each token's best single neurons (a neuron-level oracle); the largest
true expert outputs under one threshold (an expert-level oracle over the converted model's experts); the
converted model's router; and routers retrained wider, longer or on twice the tokens.

    python benchmarks/experiments/moe_router.py DIR [--layers 5,15,25]
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from ponder.adaptive import adaptive_modules, load
from ponder.data import CALIB_DEFAULT, EVAL_DEFAULT, load_text
from ponder.methods.calibrate import fit_regressor
from ponder.methods.moe import routing
from ponder.models import DEFAULT_MODEL
from ponder.models import load as load_base
from ponder.train.capture import capture_ffn_inputs


def relative_error(outputs: torch.Tensor, chosen: torch.Tensor) -> float:
    """outputs [N, E, D], chosen [N, E]: mean over tokens of ‖y − ŷ‖ / ‖y‖ for the routed part."""
    y = outputs.sum(1)
    kept = (outputs * chosen[..., None]).sum(1)
    return float(((y - kept).norm(dim=1) / y.norm(dim=1)).mean())


def half(module, scores: torch.Tensor, outputs: torch.Tensor) -> float:
    """Error with the `threshold` policy cut at half of the routed experts."""
    knob = routing.calibrate_knob("threshold", scores, 0.5)
    return relative_error(outputs, routing.route("threshold", scores, knob))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("directory", help="a converted moe model")
    parser.add_argument("--layers", default="5,15,25")
    args = parser.parse_args()
    model, tokenizer = load(args.directory)
    base, _ = load_base(DEFAULT_MODEL)
    train = capture_ffn_inputs(base, tokenizer, load_text(CALIB_DEFAULT), tokens=16384, progress=False)
    test = capture_ffn_inputs(base, tokenizer, load_text(EVAL_DEFAULT), tokens=2048, progress=False)
    modules = adaptive_modules(model)
    print("relative FFN-output error at half the (routed) neurons, 2,048 test tokens")
    with torch.inference_mode(False), torch.no_grad():
        for layer in [int(i) for i in args.layers.split(",")]:
            module, x, held_out = modules[layer], train[layer], test[layer]
            h = module.intermediate(held_out)  # [N, F], dense order
            contribution = h.abs() * module.down.norm(dim=0)
            keep = torch.zeros_like(h).scatter_(1, contribution.topk(h.shape[1] // 2, dim=1).indices, 1.0)
            y = h @ module.down.T
            neuron = float(((y - (h * keep) @ module.down.T).norm(dim=1) / y.norm(dim=1)).mean())
            outputs = module.expert_outputs(held_out)  # [N, E, D]
            row = {"neuron oracle": neuron, "expert oracle": half(module, outputs.norm(dim=-1), outputs)}
            row["router"] = half(module, module.router(held_out), outputs)
            targets = torch.cat([module.expert_outputs(c).norm(dim=-1) for c in x.split(1024)])
            for rank, steps, tokens in [(144, 3000, 16384), (72, 3000, 16384), (72, 800, 8192)]:
                router = nn.Sequential(nn.Linear(x.shape[1], rank), nn.SiLU(), nn.Linear(rank, module.routed))
                fit_regressor(
                    router, x[:tokens], targets[:tokens] / targets[:tokens].std(), steps=steps, lr=3e-3, seed=0
                )
                row[f"router r{rank} {steps} steps {tokens // 1024}k"] = half(module, router(held_out), outputs)
            print(f"layer {layer}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()), flush=True)


if __name__ == "__main__":
    main()
