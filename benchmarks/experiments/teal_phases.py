"""Where teal's one-token kernel spends its time, and whether a neuron order helps it, on real SmolLM2 inputs:
the dense kernel; teal as converted; teal with no intermediate kept (the gate/up phase and the activations
only); teal with nothing kept (the call and its parallel region); and teal on a copy of its weights with the
neurons reordered by how often the timed tokens themselves keep them (most often first, dealt alternately to the
two threads' halves so both keep as many; ordering on the timed tokens is the order's best case), which makes
kept down rows more often adjacent in memory. Same process, interleaved rounds.

    python benchmarks/experiments/teal_phases.py DIR [--budgets 0.5,0.25] [--repeats 15] [--tokens 64]
"""

from __future__ import annotations

import torch
from kernel_ab import arguments, layer_kernels, report, rounds, setup  # benchmarks/ is on sys.path as a script

from ponder.adaptive import set_budget
from ponder.kernels import layouts, native

NOTHING = 1e30  # a threshold no entry exceeds


@torch.no_grad()
def frequency_orders(modules: list, tokens: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    """Per layer, neurons by how often `tokens` keep them at the current budget, dealt alternately to the first
    and second half (the kernel's two threads own the two halves)."""
    orders = []
    for layer, module in enumerate(modules):
        x = torch.stack([token[layer] for token in tokens])  # [N, D]
        tau_in, tau_mid = module.threshold_values
        kept = module.intermediate(x * (x.abs() > tau_in)).abs() > tau_mid
        ranked = kept.float().mean(0).argsort(descending=True)
        orders.append(torch.cat([ranked[0::2], ranked[1::2]]))
    return orders


def main() -> None:
    args = arguments("teal")
    model, modules, tokens, dense = setup(args.dir, args.tokens)
    teal = [native.TealKernel(m.in_major, m.down_t, m.activation, m.gate is not None) for m in modules]

    steps = {"dense kernel": layer_kernels(dense)}
    for budget in (float(b) for b in args.budgets.split(",")):
        set_budget(model, budget)
        thresholds = [tuple(m.threshold_values) for m in modules]
        ordered = []
        for m, order in zip(modules, frequency_orders(modules, tokens), strict=True):
            layout = layouts.teal_layout(m.gate[order].contiguous(), m.up[order].contiguous())
            ordered.append(native.TealKernel(layout, m.down_t[order].contiguous(), m.activation, m.gate is not None))
        with torch.inference_mode():
            x, t = tokens[0][3], thresholds[3]
            torch.testing.assert_close(ordered[3](x, *t)[0], teal[3](x, *t)[0].clone())  # the same FFN
            kept = torch.tensor([teal[i](x, *thresholds[i])[1:] for token in tokens for i, x in enumerate(token)])
        hidden, neurons = modules[0].up.shape[1], modules[0].up.shape[0]
        print(f"b = {budget}: kept {kept[:, 0].double().mean() / hidden:.3f} of inputs, "
              f"{kept[:, 1].double().mean() / neurons:.3f} of neurons (the timed tokens, all layers)")  # fmt: skip
        steps[f"teal {budget}"] = layer_kernels(teal, thresholds)
        steps[f"teal {budget}, gate/up phase only"] = layer_kernels(teal, [(t, NOTHING) for t, _ in thresholds])
        steps[f"teal {budget}, reordered neurons"] = layer_kernels(ordered, thresholds)
    steps["teal, nothing kept"] = layer_kernels(teal, [(NOTHING, NOTHING)] * len(modules))
    rows = rounds(steps, tokens, args.repeats)
    report(rows, f"threads={torch.get_num_threads()} repeats={args.repeats} tokens={args.tokens}")


if __name__ == "__main__":
    main()
