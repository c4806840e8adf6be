"""Where a lean decode step's time goes: the whole step (as `generate` runs it: the screened greedy head), the same

Question: where does a dense decode step's time go (FFN, attention, head, the rest)? About 3 minutes.
step with the FFNs through PyTorch's modules instead of the fused C kernel, the step with every FFN replaced by the
identity, the lm_head alone (the full fp32 GEMV and the screened head) and the layers' attention calls alone,
interleaved in one process (median ms per token).

    python benchmarks/decode_breakdown.py [--repeats 7] [--steps 64]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ponder.inference import LeanDecoder
from ponder.inference.decode import NativeDenseFFN
from ponder.kernels import native
from ponder.models import DEFAULT_MODEL, load
from ponder.timing import prompt_ids


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=64)
    args = parser.parse_args()
    model, tokenizer = load(DEFAULT_MODEL)
    decoder = LeanDecoder(model, max_len=64 + args.steps)
    runner = decoder.runner
    prompt = prompt_ids(tokenizer, 64)
    token = prompt[:, -1:]
    ffns = [layer.ffn for layer in runner.layers]

    tokens = [layer.ffn_token for layer in runner.layers]  # the bound one-token paths the native step calls
    torch_ffns = [ffn.view.module if isinstance(ffn, NativeDenseFFN) else ffn for ffn in ffns]  # the HF modules

    with torch.inference_mode():  # a real final hidden state: the screen's work depends on it
        runner.reset(1)
        runner.forward(prompt)
        hidden = runner._native_step(token).clone()

    def identity(h: torch.Tensor) -> torch.Tensor:
        return h

    def steps(ffn_kind: str) -> float:
        chosen = {"kernel": ffns, "torch": torch_ffns, "none": [identity] * len(ffns)}[ffn_kind]
        bound = {"kernel": tokens, "torch": [None] * len(ffns), "none": [identity] * len(ffns)}[ffn_kind]
        for layer, ffn, token_path in zip(runner.layers, chosen, bound, strict=True):
            layer.ffn, layer.ffn_token = ffn, token_path
        runner.reset(1)
        runner.forward(prompt)
        start = time.perf_counter()
        for _ in range(args.steps):
            runner.next_token(token)
        return (time.perf_counter() - start) / args.steps

    def lm_head() -> float:  # as `forward` runs it
        start = time.perf_counter()
        for _ in range(args.steps):
            native.gemv(model.lm_head.weight, hidden)
        return (time.perf_counter() - start) / args.steps

    def screened_head() -> float:  # as `next_token` runs it
        start = time.perf_counter()
        for _ in range(args.steps):
            runner.greedy_head(hidden)
        return (time.perf_counter() - start) / args.steps

    def attention() -> float:  # every layer's attention call of one step, without the Python loop around it
        runner.reset(1)
        runner.forward(prompt)
        x, ffn_in, work, position = runner._x, runner._ffn_in, runner._work, runner.position
        cos, sin_signed = runner.cos[position], runner.sin_signed[position]
        calls = [
            (layer.kernel, keys[0], values[0])
            for layer, keys, values in zip(runner.layers, runner.keys, runner.values, strict=True)
        ]
        start = time.perf_counter()
        for _ in range(args.steps):
            for kernel, keys, values in calls:
                kernel(x, cos, sin_signed, keys, values, position, ffn_in, work)
        return (time.perf_counter() - start) / args.steps

    cases = {
        "full step": lambda: steps("kernel"),
        "step, PyTorch FFN": lambda: steps("torch"),
        "step without FFN": lambda: steps("none"),
        "lm_head alone": lm_head,
        "screened head alone": screened_head,
        "attention alone": attention,
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    with torch.inference_mode():
        for fn in cases.values():
            fn()
        for _ in range(args.repeats):
            for name, fn in cases.items():
                times[name].append(fn())
    median = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    for name, t in times.items():
        print(f"{name:18s} {median[name]:7.2f} ms  ({min(t) * 1e3:.2f}-{max(t) * 1e3:.2f})")
    print(f"{'FFN (difference)':18s} {median['full step'] - median['step without FFN']:7.2f} ms")
    print(f"{'PyTorch FFN (diff.)':18s} {median['step, PyTorch FFN'] - median['step without FFN']:7.2f} ms")


if __name__ == "__main__":
    main()
