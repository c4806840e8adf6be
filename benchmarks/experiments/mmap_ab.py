"""Dense SmolLM2-135M with its weights memory-mapped from the safetensors cache (what `from_pretrained` gives by
default) against the same weights read into process memory (`disable_mmap=True`), same process, interleaved
rounds, median: the FFN kernels of all 30 layers for one token, the lm_head GEMV, and a whole lean decode step.

    python benchmarks/experiments/mmap_ab.py [--repeats 10] [--steps 64]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ponder.inference import LeanDecoder
from ponder.kernels import native
from ponder.models import DEFAULT_MODEL
from ponder.models.load import _dequantize_gguf, resolve
from ponder.timing import paired_ratio, prompt_ids


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--steps", type=int, default=64)
    args = parser.parse_args()
    directory = str(_dequantize_gguf(resolve(DEFAULT_MODEL)[1]))  # the fp32 safetensors cache ponder.load reads
    tokenizer = AutoTokenizer.from_pretrained(directory)
    models = {
        "mmap": AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval(),
        "in memory": AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, disable_mmap=True).eval(),
    }
    prompt = prompt_ids(tokenizer, 64)
    token = prompt[:, -1:]
    x = torch.randn(models["mmap"].config.hidden_size)

    def timed(fn: Callable[[], object]) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    def ffn(model) -> Callable[[], float]:
        kernels = [
            native.DenseKernel(m.gate_proj.weight, m.up_proj.weight, m.down_proj.weight, None, None, "silu")
            for m in (layer.mlp for layer in model.model.layers)
        ]
        return lambda: timed(lambda: [kernel(x) for kernel in kernels])

    def head(model) -> Callable[[], float]:
        return lambda: timed(lambda: native.gemv(model.lm_head.weight, x))

    def step(model) -> Callable[[], float]:
        runner = LeanDecoder(model, max_len=64 + args.steps).runner

        def run() -> float:  # seconds a decode step after the prompt, the prefill not timed
            runner.reset(1)
            runner.forward(prompt)
            return timed(lambda: [runner.forward(token) for _ in range(args.steps)]) / args.steps

        return run

    cases = {}
    for name, model in models.items():
        cases[f"FFN, 30 layers, {name}"] = ffn(model)
        cases[f"lm_head GEMV, {name}"] = head(model)
        cases[f"decode step, {name}"] = step(model)
    times: dict[str, list[float]] = {name: [] for name in cases}
    with torch.inference_mode():
        for fn in cases.values():
            fn()
        for _ in range(args.repeats):
            for name, fn in cases.items():
                times[name].append(fn())
    print(f"threads={torch.get_num_threads()} repeats={args.repeats} (ms, median and min-max)")
    for name, t in times.items():
        print(f"{name:32s} {statistics.median(t) * 1e3:7.2f}  ({min(t) * 1e3:.2f}-{max(t) * 1e3:.2f})")
    for what in ("FFN, 30 layers", "lm_head GEMV", "decode step"):
        mapped, loaded = times[f"{what}, mmap"], times[f"{what}, in memory"]
        ratio = paired_ratio(mapped, loaded)
        print(f"{what:32s} mmap / in memory = {ratio:.3f}")


if __name__ == "__main__":
    main()
