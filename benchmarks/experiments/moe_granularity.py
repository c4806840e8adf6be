"""How expert size changes moe's one-token kernel: conversions with other numbers of experts (the same shared
neurons), each `moe_ffn` over all 30 layers on the same real FFN inputs at one budget, interleaved with the dense
kernel in one process (the first round dropped as warm-up). Prints each model's share of neurons run and the
kernel's cost per unit of it against dense (1.0 = as fast per neuron as the dense kernel).

    python benchmarks/experiments/moe_granularity.py DIR [DIR ...] [--budget 0.5] [--repeats 15] [--tokens 64]
"""

from __future__ import annotations

import argparse
import statistics

import torch
from kernel_ab import layer_kernels, report, rounds, setup  # benchmarks/ is on sys.path as a script

from ponder.adaptive import set_budget


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dirs", nargs="+", help="untuned moe conversions of the default model")
    parser.add_argument("--budget", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    steps, shares, sizes, tokens = {}, {}, {}, None
    for directory in args.dirs:
        model, modules, inputs, dense = setup(directory, args.tokens)
        tokens = tokens or inputs  # the untuned conversions' FFN inputs are the dense model's: use one copy
        steps.setdefault("dense kernel", layer_kernels(dense))
        set_budget(model, args.budget)
        neurons = []
        with torch.inference_mode():
            for token in tokens:
                for m, x in zip(modules, token, strict=True):
                    m._decode(x[None])
                    neurons.append((m.shared_rows + int(m._kernel.counts[0]) * m.size) / m.up.shape[0])
        name = f"{directory} ({modules[0].routed} x {modules[0].size})"
        shares[name], sizes[name] = statistics.mean(neurons), modules[0].size
        knobs = [(m._policy_index, m.knob()) for m in modules]
        steps[name] = layer_kernels([m._kernel for m in modules], knobs)
    with torch.inference_mode():
        times = rounds(steps, tokens, args.repeats)
    report(times, f"threads={torch.get_num_threads()} repeats={args.repeats} tokens={args.tokens} b={args.budget}")
    dense = times["dense kernel"]
    for name, share in shares.items():
        per_unit = statistics.median(t / (d * share) for t, d in zip(times[name], dense, strict=True))
        print(f"{name}: {share:.3f} of the neurons run; cost per unit of that against dense {per_unit:.2f}")


if __name__ == "__main__":
    main()
