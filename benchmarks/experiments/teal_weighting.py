"""Does weighting TEAL's magnitudes by weight norms (WINA-style: |x_j|·‖W_:,j‖) pick better inputs here?

On FFN inputs captured from dense SmolLM2, for selected layers: thresholds calibrated on 1,024 tokens of
`wikitext2-valid` keep a fraction of the FFN inputs (gate/up) and of the intermediate entries (down), by plain
magnitude (TEAL) or by magnitude times the column norm of the weights that read them (WINA); printed is the
relative output error on 1,024 held-out tokens of `wikitext2` test at the same kept fractions.

    python benchmarks/experiments/teal_weighting.py [--layers 3,8,15,22,27]
"""

from __future__ import annotations

import argparse

import torch

from ponder import load
from ponder.adaptive import replace_ffns
from ponder.data import load_text
from ponder.methods import get_method
from ponder.methods.base import quantile
from ponder.train.capture import capture_ffn_inputs


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", default="3,8,15,22,27")
    args = parser.parse_args()
    model, tokenizer = load("smollm2-135m")
    calib = capture_ffn_inputs(model, tokenizer, load_text("wikitext2-valid"), tokens=1024, progress=False)
    test = capture_ffn_inputs(model, tokenizer, load_text("wikitext2"), tokens=1024, progress=False)
    modules = replace_ffns(model, "teal", get_method("teal").config_class())
    print("layer keep teal wina")
    for layer in map(int, args.layers.split(",")):
        module, x, x_test = modules[layer], calib[layer], test[layer]
        y_test = module.output(module.intermediate(x_test))
        weighted = (torch.cat([module.gate, module.up]).norm(dim=0), module.down.norm(dim=0))  # [D], [F]
        spread = " ".join(f"{float(w.std() / w.mean()):.3f}" for w in weighted)
        print(f"{layer:5d} column-norm coefficient of variation (gate/up inputs, down rows): {spread}")
        plain = (torch.ones_like(weighted[0]), torch.ones_like(weighted[1]))
        for keep in (0.5, 0.3):
            errors = []
            for scale_in, scale_mid in (plain, weighted):
                q = torch.tensor([1 - keep])
                tau_in = quantile(x.abs() * scale_in, q)[0]
                tau_mid = quantile((module.intermediate(x * (x.abs() * scale_in > tau_in)).abs() * scale_mid), q)[0]
                h = module.intermediate(x_test * (x_test.abs() * scale_in > tau_in))  # [N, F]
                y = module.output(h * (h.abs() * scale_mid > tau_mid))
                errors.append(float(((y - y_test).norm(dim=-1) / y_test.norm(dim=-1)).mean()))
            print(f"{layer:5d} {keep:4.2f} " + " ".join(f"{e:6.3f}" for e in errors))


if __name__ == "__main__":
    main()
