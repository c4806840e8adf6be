"""FFN time of converted SmolLM2-135M modules for one decode token: all 30 layers, dense vs each budget.

Question: how fast is each method's FFN alone, on the decoder's path, at each budget? About 2 minutes a model.

Same process, interleaved rounds, median. Inputs are the real FFN inputs of one token (captured from the dense
model on calibration text), so active sets are realistic; weights are the real ones, caches cold per layer.
Each module runs the way the lean decoder runs it: through its bound one-token path (`token_forward`) where it
has one, else through the module; budget 1 is the dense kernel on the same path.

    python benchmarks/ffn_modules.py DIR [DIR ...] [--budgets 0.5,0.25] [--repeats 30]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ponder.adaptive import adaptive_modules, load, set_budget
from ponder.data import CALIB_DEFAULT, load_text
from ponder.state import method_name
from ponder.train.capture import capture_ffn_inputs


def bench_dir(directory: str, budgets: list[float], repeats: int, n_tokens: int) -> None:
    model, tokenizer = load(directory)
    modules = adaptive_modules(model)
    inputs = capture_ffn_inputs(model, tokenizer, load_text(CALIB_DEFAULT), tokens=512, progress=False)
    tokens = [[layer[64 + t].clone() for layer in inputs] for t in range(n_tokens)]  # [D] each, past any prompt
    paths = [module.token_forward() or (lambda x, module=module: module(x[None])[0]) for module in modules]

    def run(budget: float) -> float:
        set_budget(model, budget)
        for module, layer in zip(modules, inputs, strict=True):
            if hasattr(module, "start_sequences"):  # core: a 64-token prompt chooses the sequence's core neurons
                module(layer[None, :64])
                module.pop_compute()
        start = time.perf_counter()
        for token in tokens:
            for path, x in zip(paths, token, strict=True):
                path(x)
        return (time.perf_counter() - start) / len(tokens)

    configs = [1.0, *(b for b in budgets if b >= modules[0].min_budget - 1e-6)]
    seconds: dict[float, list[float]] = {b: [] for b in configs}
    compute = {}
    with torch.inference_mode():
        for module in modules:
            module.pop_compute()  # drop the capture pass
        for b in configs:
            run(b)
            macs = sum(m.pop_compute()[1] for m in modules)
            compute[b] = macs / (len(tokens) * sum(m.dense_macs() for m in modules))
        for _ in range(repeats):
            for b in configs:
                seconds[b].append(run(b))
    method = method_name(model)
    for b in configs:
        t = seconds[b]
        ratio = statistics.median(d / s for d, s in zip(seconds[1.0], t, strict=True))
        print(
            f"{method:10s} {b:6.2f} {compute[b]:11.3f} {statistics.median(t) * 1e3:9.2f} "
            f"{min(t) * 1e3:6.2f}-{max(t) * 1e3:<6.2f} {ratio:8.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dirs", nargs="+", help="converted model directories")
    parser.add_argument("--budgets", default="0.5,0.25")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--tokens", type=int, default=16, help="distinct decode tokens cycled through")
    args = parser.parse_args()
    budgets = [float(b) for b in args.budgets.split(",")]
    print(f"threads={torch.get_num_threads()} repeats={args.repeats}")
    print(f"{'method':10s} {'budget':>6s} {'FFN compute':>11s} {'ms/token':>9s} {'min-max':>13s} {'× dense':>8s}")
    for directory in args.dirs:
        bench_dir(directory, budgets, args.repeats, args.tokens)


if __name__ == "__main__":
    main()
