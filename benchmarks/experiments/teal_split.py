"""How teal's budget should be shared between the FFN's two thresholds: relative FFN-output error of a layer when
keeping a fraction a of x (the gate/up inputs) and m of the intermediate (the down inputs), per token by
magnitude, at equal FFN compute (2a + m = 3b for a GLU), on captured SmolLM2 inputs of calibration text.

    python benchmarks/experiments/teal_split.py DIR [--layers 3,15,25] [--budgets 0.5,0.35]
"""

from __future__ import annotations

import argparse

import torch

from ponder.adaptive import adaptive_modules, load
from ponder.data import CALIB_DEFAULT, load_text
from ponder.train.capture import capture_ffn_inputs


def top_mask(values: torch.Tensor, keep: float) -> torch.Tensor:
    """Each row's round(keep · width) largest magnitudes."""
    k = round(keep * values.shape[1])
    return torch.zeros_like(values, dtype=torch.bool).scatter_(1, values.abs().topk(k, dim=1).indices, True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dir", help="a converted SwiGLU model (its dense weights are used)")
    parser.add_argument("--layers", default="3,15,25")
    parser.add_argument("--budgets", default="0.5,0.35")
    args = parser.parse_args()
    model, tokenizer = load(args.dir)
    modules = adaptive_modules(model)
    inputs = capture_ffn_inputs(model, tokenizer, load_text(CALIB_DEFAULT), tokens=1024, progress=False)
    for layer in (int(v) for v in args.layers.split(",")):
        module, x = modules[layer], inputs[layer]
        with torch.no_grad():
            dense = module.dense_forward(x)
            for budget in (float(v) for v in args.budgets.split(",")):
                cells = []
                for offset in (-0.1, -0.05, 0.0, 0.05, 0.1, 0.15):
                    a = budget + offset
                    m = 3 * budget - 2 * a
                    h = module.intermediate(x * top_mask(x, a))
                    out = module.output(h * top_mask(h, m))
                    error = ((out - dense).norm(dim=1) / dense.norm(dim=1)).mean()
                    cells.append(f"a {a:.2f} / m {m:.2f}: {error:.3f}")
                print(f"layer {layer:2d}  b = {budget}:  " + "   ".join(cells))


if __name__ == "__main__":
    main()
