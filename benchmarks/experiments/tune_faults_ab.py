"""Does keeping freed memory (`ponder.train.allocator`) speed up the end-to-end phase? glibc's thresholds cannot be
put back once raised, so each variant runs in its own process, alternating, --rounds times: the phase's own loop
(`tune_experts`, bfloat16 as `--set tune_precision=bfloat16`, budget 0.5) for --steps steps, timing each step and
counting its minor page faults. The first two steps of a run are warm-up.

    python benchmarks/experiments/tune_faults_ab.py MOE_DIR [--steps 8] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child(model_dir: str, steps: int, keep: bool) -> None:
    from ponder.adaptive import adaptive_modules, load
    from ponder.data import CALIB_DEFAULT, load_text
    from ponder.train import tune
    from ponder.train.capture import calibration_windows

    if not keep:
        tune.keep_freed_memory = lambda: False
    model, tokenizer = load(model_dir)
    windows = calibration_windows(tokenizer, load_text(CALIB_DEFAULT), tokens=8192)
    marks = []
    compare = tune._comparison

    def timed_comparison(model, rows):
        outputs, divergence = compare(model, rows)

        def marked(teacher, student):
            marks.append((time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt))
            return divergence(teacher, student)

        return outputs, marked

    tune._comparison = timed_comparison
    with tempfile.TemporaryDirectory() as work:
        tune.tune_experts(model, adaptive_modules(model), windows, [0.5], steps=steps, seed=0, lr=1e-4,
                          work=Path(work), precision="bfloat16")  # fmt: skip
    steps_taken = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(marks[2:], marks[3:], strict=False)]
    print(json.dumps({"seconds": [s for s, _ in steps_taken], "faults": [f for _, f in steps_taken]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", choices=["keep", "plain"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.model, args.steps, args.child == "keep")
        return
    results: dict[str, dict[str, list]] = {name: {"seconds": [], "faults": []} for name in ("plain", "keep")}
    for _ in range(args.rounds):
        for name in results:
            command = [sys.executable, __file__, args.model, "--steps", str(args.steps), "--child", name]
            run = subprocess.run(command, capture_output=True, text=True, check=True)
            for key, values in json.loads(run.stdout.strip().splitlines()[-1]).items():
                results[name][key].extend(values)
    print(f"{args.model}: {args.rounds} runs of {args.steps} steps each way, alternating; steps after two warm-up")
    base = statistics.median(results["plain"]["seconds"])
    for name, label in (("plain", "glibc defaults"), ("keep", "freed memory kept")):
        seconds, faults = results[name]["seconds"], results[name]["faults"]
        median = statistics.median(seconds)
        print(f"{label:18s} {median:5.2f} s a step ({min(seconds):.2f}-{max(seconds):.2f}), {base / median:.2f}x, "
              f"{statistics.median(faults):,.0f} minor faults a step")  # fmt: skip


if __name__ == "__main__":
    main()
