"""Where moe's one-token kernel spends its time beyond the rows it must read: bare kernel calls over all 30 layers
on real FFN inputs, same process, interleaved rounds (the first dropped as warm-up), each row against the dense
kernel:

- `moe_ffn` at the budget (router, policy, pseudo expert, rows: what decode runs);
- `glu_rows` over the very neurons `moe_ffn` chose for each token (the rows alone: no router, no pseudo expert);
- `glu_rows` over the same number of neurons taken as one contiguous run from the start (no jumps between experts);
- the dense kernel's time scaled by the neurons' share, the bandwidth-only prediction (printed, not timed).

    python benchmarks/experiments/moe_kernel_parts.py DIR [--budgets 0.5,0.25] [--repeats 15] [--tokens 64]
"""

from __future__ import annotations

import statistics

import torch
from kernel_ab import arguments, layer_kernels, report, rounds, setup  # benchmarks/ is on sys.path as a script

from ponder.adaptive import set_budget
from ponder.kernels import native


def main() -> None:
    args = arguments("moe")
    model, modules, tokens, dense = setup(args.dir, args.tokens)
    steps = {"dense kernel": layer_kernels(dense)}
    shares = {}
    for budget in [float(b) for b in args.budgets.split(",")]:
        set_budget(model, budget)
        chosen, runs = [], []  # per token, per layer: the neuron list moe_ffn ran, and a run of as many from 0
        with torch.inference_mode():
            for token in tokens:
                for m, x in zip(modules, token, strict=True):
                    m._decode(x[None])
                kept = [m._kernel.index[: m.shared_rows + int(m._kernel.counts[0]) * m.size].clone() for m in modules]
                chosen.append(kept)
                runs.append([torch.arange(len(k)) for k in kept])
        widths = [m.up.shape[0] for m in modules]
        shares[budget] = statistics.mean(len(k) / f for per in chosen for k, f in zip(per, widths, strict=True))
        kernels = [m._kernel for m in modules]
        knobs = [(m._policy_index, m.knob()) for m in modules]
        steps[f"moe_ffn {budget}"] = layer_kernels(kernels, knobs)
        for name, lists in (("rows, its neurons", chosen), ("rows, one run", runs)):
            steps[f"{name} {budget}"] = rows_step(modules, lists, tokens)
    with torch.inference_mode():
        times = rounds(steps, tokens, args.repeats)
    report(times, f"threads={torch.get_num_threads()} repeats={args.repeats} tokens={args.tokens} dir={args.dir}")
    dense_ms = statistics.median(times["dense kernel"])
    for budget, share in shares.items():
        predicted = dense_ms * share
        print(f"b = {budget}: {share:.3f} of the neurons; at the dense kernel's bandwidth {predicted:.3f} ms/token")


def rows_step(modules: list, lists: list[list[torch.Tensor]], tokens: list):
    """A step function over `tokens` (by position) running `glu_rows` on each layer's neuron list for that token."""
    position = {id(token): t for t, token in enumerate(tokens)}

    def step(token: list[torch.Tensor]) -> None:
        for m, x, index in zip(modules, token, lists[position[id(token)]], strict=True):
            native.glu_rows(x, m.gate_p, m.up_p, m.down_t, index, m.activation, workspace=m.workspace)

    return step


if __name__ == "__main__":
    main()
