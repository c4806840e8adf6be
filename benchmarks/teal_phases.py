"""Where teal's one-token kernel spends its time, and whether a neuron order helps it, on real SmolLM2 inputs:
the dense kernel; teal as converted; teal with no intermediate kept (the gate/up phase and the activations
only); teal with nothing kept (the call and its parallel region); and teal on a copy of its weights with the
neurons reordered by how often calibration tokens keep them (most often first, alternating between the two
threads' halves so both keep as many), which makes kept down rows more often adjacent in memory. Same process,
interleaved rounds, median ms for one token through all 30 layers.

    python benchmarks/teal_phases.py DIR [--budgets 0.5,0.25] [--repeats 12] [--tokens 64]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ponder.adaptive import adaptive_modules, load, set_budget
from ponder.data import CALIB_DEFAULT, load_text
from ponder.kernels import native
from ponder.train.capture import capture_ffn_inputs

NOTHING = 1e30  # a threshold no entry exceeds


@torch.no_grad()
def frequency_orders(modules: list, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per layer, neurons by how often the tokens `inputs` keep them at the current budget, dealt alternately to
    the first and second half (the kernel's two threads own the two halves)."""
    orders = []
    for module, x in zip(modules, inputs, strict=True):
        tau_in, tau_mid = module.threshold_values
        kept = module.intermediate(x * (x.abs() > tau_in)).abs() > tau_mid
        ranked = kept.float().mean(0).argsort(descending=True)
        orders.append(torch.cat([ranked[0::2], ranked[1::2]]))
    return orders


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dir", help="a converted teal model (SwiGLU)")
    parser.add_argument("--budgets", default="0.5,0.25")
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    model, tokenizer = load(args.dir)
    modules = adaptive_modules(model)
    inputs = capture_ffn_inputs(model, tokenizer, load_text(CALIB_DEFAULT), tokens=2048, progress=False)
    timed_tokens = [[layer[64 + t].clone() for layer in inputs] for t in range(args.tokens)]
    order_tokens = [layer[512:] for layer in inputs]  # the order is chosen on other tokens than those timed
    dense = [native.DenseKernel(m.gate, m.up, m.down, None, None, m.activation) for m in modules]
    teal = [native.TealKernel(m.in_major, m.down_t, m.activation, m.gate is not None) for m in modules]

    def kernels_run(kernels: list, thresholds: list | None):
        def run() -> None:
            for token in timed_tokens:
                if thresholds is None:
                    for kernel, x in zip(kernels, token, strict=True):
                        kernel(x)
                else:
                    for kernel, x, (tau_in, tau_mid) in zip(kernels, token, thresholds, strict=True):
                        kernel(x, tau_in, tau_mid)

        return run

    cases = {"dense kernel": kernels_run(dense, None)}
    for budget in (float(b) for b in args.budgets.split(",")):
        set_budget(model, budget)
        thresholds = [tuple(m.threshold_values) for m in modules]
        ordered = []
        for m, order in zip(modules, frequency_orders(modules, order_tokens), strict=True):
            layout = native.teal_layout(m.gate[order].contiguous(), m.up[order].contiguous())
            ordered.append(native.TealKernel(layout, m.down_t[order].contiguous(), m.activation, m.gate is not None))
        with torch.inference_mode():  # a reordered layout computes the same FFN
            x, (tau_in, tau_mid) = timed_tokens[0][3], thresholds[3]
            torch.testing.assert_close(ordered[3](x, tau_in, tau_mid)[0], teal[3](x, tau_in, tau_mid)[0].clone())
            kept = torch.tensor([
                teal[i](x, *thresholds[i])[1:] for token in timed_tokens for i, x in enumerate(token)
            ]).double()  # fmt: skip
        hidden, neurons = modules[0].up.shape[1], modules[0].up.shape[0]
        print(f"b = {budget}: kept {kept[:, 0].mean() / hidden:.3f} of inputs, {kept[:, 1].mean() / neurons:.3f} "
              f"of neurons (mean over the timed tokens and layers)")  # fmt: skip
        cases[f"teal {budget}"] = kernels_run(teal, thresholds)
        cases[f"teal {budget}, gate/up phase only"] = kernels_run(teal, [(t, NOTHING) for t, _ in thresholds])
        cases[f"teal {budget}, reordered neurons"] = kernels_run(ordered, thresholds)
    cases["teal, nothing kept"] = kernels_run(teal, [(NOTHING, NOTHING)] * len(modules))
    seconds: dict[str, list[float]] = {name: [] for name in cases}
    with torch.inference_mode():
        for run in cases.values():
            run()
        for _ in range(args.repeats):
            for name, run in cases.items():
                start = time.perf_counter()
                run()
                seconds[name].append((time.perf_counter() - start) / len(timed_tokens))
    print(f"threads={torch.get_num_threads()} repeats={args.repeats} tokens={args.tokens}")
    for name, t in seconds.items():
        ratio = statistics.median(d / s for d, s in zip(seconds["dense kernel"], t, strict=True))
        print(f"{name:36s} {statistics.median(t) * 1e3:7.3f} ms/token  ({min(t) * 1e3:.2f}-{max(t) * 1e3:.2f})  "
              f"{ratio:5.2f}x dense")  # fmt: skip


if __name__ == "__main__":
    main()
