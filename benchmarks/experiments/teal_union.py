"""Can a batch (or a prefill chunk) under teal read fewer weights than dense? Only if its tokens keep the same
inputs: a union executor reads the union of the kept gate/up inputs and of the kept intermediate entries over the
batch. This prints that union's share for B consecutive tokens, on captured SmolLM2 FFN inputs of calibration text,
at teal's split for b = 0.5 (keep 0.55 of x and 0.4 of the intermediate) and for b = 0.25.

    python benchmarks/experiments/teal_union.py [--layers 3,15,25] [--batches 1,2,4,8,16,64]
"""

from __future__ import annotations

import argparse

import torch

from ponder.adaptive import load
from ponder.data import CALIB_DEFAULT, load_text
from ponder.models.targets import architecture_of, decoder_layers
from ponder.train.capture import capture_ffn_inputs

SPLITS = {0.5: (0.55, 0.4), 0.25: (0.3, 0.15)}  # budget -> kept fraction of x, of the intermediate


def kept(values: torch.Tensor, fraction: float) -> torch.Tensor:
    """Entries above the magnitude quantile that keeps `fraction` of all entries (teal's calibrated threshold)."""
    flat = values.abs().flatten()
    return values.abs() > flat.kthvalue(max(1, int((1 - fraction) * flat.numel()))).values


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", default="3,15,25")
    parser.add_argument("--batches", default="1,2,4,8,16,64")
    args = parser.parse_args()
    model, tokenizer = load("smollm2-135m")
    arch = architecture_of(model)
    layers = decoder_layers(model)
    inputs = capture_ffn_inputs(model, tokenizer, load_text(CALIB_DEFAULT), tokens=1024, progress=False)
    batches = [int(v) for v in args.batches.split(",")]
    print("union of kept entries over B consecutive tokens, as a share of all (x = gate/up inputs, h = down inputs)")
    for budget, (a, m) in SPLITS.items():
        for index in (int(v) for v in args.layers.split(",")):
            mlp, x = getattr(layers[index], arch.ffn), inputs[index]
            kept_x = kept(x, a)
            xs = x * kept_x
            h = torch.nn.functional.silu(mlp.gate_proj(xs)) * mlp.up_proj(xs)
            kept_h = kept(h, m)
            cells = []
            for batch in batches:
                n = x.shape[0] // batch * batch
                union_x = kept_x[:n].view(-1, batch, x.shape[1]).any(1).float().mean()
                union_h = kept_h[:n].view(-1, batch, h.shape[1]).any(1).float().mean()
                cells.append(f"B={batch}: x {union_x:.2f} h {union_h:.2f}")
            print(f"b = {budget}  layer {index:2d}  " + "  ".join(cells))


if __name__ == "__main__":
    main()
