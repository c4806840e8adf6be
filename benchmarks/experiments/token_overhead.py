"""Per-call cost of a decode token's FFN outside the kernel: through the module, through the bound one-token path
(`token_forward`), and the bare ctypes call, for one converted layer and a token whose inputs all fall under the
thresholds (so the kernel does almost nothing and what is timed is the calling).

    python benchmarks/experiments/token_overhead.py DIR [--layer 5] [--calls 2000]
"""

from __future__ import annotations

import argparse
import timeit

import torch

from ponder.adaptive import adaptive_modules, load, set_budget
from ponder.kernels import native


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dir", help="a converted teal model directory")
    parser.add_argument("--layer", type=int, default=5)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    model, _ = load(args.dir)
    set_budget(model, 0.5)
    module = adaptive_modules(model)[args.layer]
    x = torch.full((module.up.shape[1],), 1e-9)  # under every input threshold: nothing kept
    path = module.token_forward()
    kernel = native.TealKernel(module.in_major, module.down_t, module.activation, module.gate is not None)
    tau_in, tau_mid = module.threshold_values
    calls = {
        "module(x)": lambda: module(x[None, None]),
        "token_forward(x)": lambda: path(x),
        "bound kernel only": lambda: kernel(x, tau_in, tau_mid),
    }
    with torch.inference_mode():
        for name, call in calls.items():
            best = min(timeit.repeat(call, number=args.calls, repeat=5)) / args.calls
            print(f"{name:20s} {best * 1e6:7.2f} µs per call")


if __name__ == "__main__":
    main()
