"""Why `nested` loses quality: relative FFN-output error of importance-ordered prefixes on held-out tokens.

For selected layers of a converted nested model, on FFN inputs captured from the dense model on 1,024 tokens of
`wikitext2` (test): the router's per-token prefix choice at a budget, a static prefix of the same mean length,
and an oracle that picks each token's prefix from the true errors at the same mean length. Errors are
mean over tokens of ‖y − ŷ‖ / ‖y‖.

    python benchmarks/experiments/nested_diagnostics.py DIR [--layers 0,5,10,15,20,25,29] [--budgets 0.75,0.5]
"""

from __future__ import annotations

import argparse

import torch

from ponder.adaptive import adaptive_modules, load, set_budget
from ponder.data import load_text
from ponder.train.capture import capture_ffn_inputs


def oracle_error(errors: torch.Tensor, norms: torch.Tensor, mean_k: float) -> float:
    """Mean relative error when each token runs the shortest prefix under one error threshold (mean k fixed)."""
    curve = torch.cat([errors, torch.zeros(len(errors), 1)], dim=1)  # [N, L+1], k = 0..L
    low, high = float(curve.min()), float(curve.max())
    for _ in range(40):
        middle = (low + high) / 2
        low, high = (middle, high) if (curve > middle).sum(1).float().mean() > mean_k else (low, middle)
    k = (curve > high).sum(1)
    return float((curve.gather(1, k[:, None])[:, 0] / norms).mean())


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("directory")
    parser.add_argument("--layers", default="0,5,10,15,20,25,29")
    parser.add_argument("--budgets", default="0.75,0.5")
    args = parser.parse_args()
    model, tokenizer = load(args.directory)
    modules = adaptive_modules(model)
    set_budget(model, 1.0)
    inputs = capture_ffn_inputs(model, tokenizer, load_text("wikitext2"), tokens=1024, progress=False)
    print("layer budget mean_k router static oracle")
    for layer in map(int, args.layers.split(",")):
        module, x = modules[layer], inputs[layer]
        dense = module.dense_forward(x)
        norms = dense.norm(dim=-1)
        errors = module.prefix_errors(x)  # [N, L]
        for budget in map(float, args.budgets.split(",")):
            set_budget(model, budget)
            k = module.learners_for(x)
            router = float(((module.reference_forward(x) - dense).norm(dim=-1) / norms).mean())
            static_k = round(float(k.float().mean()))
            static = float((errors[:, static_k] / norms).mean()) if static_k < module.learners else 0.0
            oracle = oracle_error(errors, norms, float(k.float().mean()))
            print(f"{layer:5d} {budget:6.2f} {float(k.float().mean()):6.1f} {router:6.3f} {static:6.3f} {oracle:6.3f}")


if __name__ == "__main__":
    main()
