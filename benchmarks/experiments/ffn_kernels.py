"""FFN executors at SmolLM2-135M shapes (30 layers, D=576, F=1536, fp32), batch-1, same process, interleaved.

Weights are random (speed depends on shapes, not values); each layer has its own weights, so the caches are
cold as in real decoding. Prints median ms for the FFNs of all 30 layers for one token, and ratios to dense.

    python benchmarks/experiments/ffn_kernels.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from ponder.kernels import native

LAYERS, D, FF = 30, 576, 1536


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--fractions", default="0.5,0.25")
    args = parser.parse_args()
    torch.manual_seed(0)
    layers = [
        dict(gate=torch.randn(FF, D) / 24, up=torch.randn(FF, D) / 24, down=torch.randn(D, FF) / 40)
        for _ in range(LAYERS)
    ]
    for w in layers:
        w["down_t"] = w["down"].t().contiguous()
    x = torch.randn(D)
    workspace = native.Workspace()
    lib = native.library()
    assert lib is not None, "kernels failed to build"

    def dense():
        for w in layers:
            h = F.silu(F.linear(x, w["gate"])) * F.linear(x, w["up"])
            F.linear(h, w["down"])

    cases = {"dense (3 x linear)": dense}
    for fraction in [float(f) for f in args.fractions.split(",")]:
        k = int(FF * fraction)
        neurons = [torch.randperm(FF)[:k].sort().values for _ in layers]
        blocks = []
        for _ in layers:
            chosen = torch.randperm(FF // 32)[: k // 32].sort().values
            blocks.append((chosen[:, None] * 32 + torch.arange(32)).flatten())
        sliced = [{n: w[n][:k].contiguous() for n in ("gate", "up", "down_t")} for w in layers]

        def gather_torch(idx=neurons):
            for w, i in zip(layers, idx, strict=True):
                h = F.silu(w["gate"].index_select(0, i) @ x) * (w["up"].index_select(0, i) @ x)
                F.embedding_bag(i[None], w["down_t"], per_sample_weights=h[None], mode="sum")

        def native_rows(idx):
            def run():
                for w, i in zip(layers, idx, strict=True):
                    native.glu_rows(x, w["gate"], w["up"], w["down_t"], i, "silu", workspace=workspace)

            return run

        def presliced(sl=sliced):
            for s in sl:
                h = F.silu(F.linear(x, s["gate"])) * F.linear(x, s["up"])
                h @ s["down_t"]

        cases[f"{fraction:.2f} torch index_select + embedding_bag"] = gather_torch
        cases[f"{fraction:.2f} C kernel, single neurons"] = native_rows(neurons)
        cases[f"{fraction:.2f} C kernel, blocks of 32"] = native_rows(blocks)
        cases[f"{fraction:.2f} pre-sliced contiguous (torch)"] = presliced
    times = {name: [] for name in cases}
    with torch.inference_mode():
        for fn in cases.values():
            fn()
        for _ in range(args.repeats):
            for name, fn in cases.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    base = statistics.median(times["dense (3 x linear)"])
    print(f"threads={torch.get_num_threads()} repeats={args.repeats}")
    print(f"{'executor':48s} {'ms (median)':>12s} {'min-max':>14s} {'× dense':>8s}")
    for name, t in times.items():
        med = statistics.median(t)
        print(f"{name:48s} {med * 1e3:12.2f} {min(t) * 1e3:6.2f}-{max(t) * 1e3:<7.2f} {base / med:8.2f}")


if __name__ == "__main__":
    main()
