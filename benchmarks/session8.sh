#!/usr/bin/env bash
# Session-8 numbers in BENCHMARKS.md: teal's one-region kernel with prefetch against session 7's (commit 5bdd099,
# built from git), the FFN modules on the decoder's bound one-token paths, their Python cost, and decode speed.
# Run it alone on the machine.
# Usage: bash benchmarks/session8.sh [RUNS_DIR]
set -euo pipefail
runs=${1:-runs}
out=benchmarks/results
[ -d "$runs/s8/teal" ] || ponder convert smollm2-135m --method teal -o "$runs/s8/teal"
python benchmarks/teal_kernel_ab.py "$runs/s8/teal" --repeats 20 2>&1 | grep -v "Loading weights" \
    | tee "$out/teal-kernel-s8.txt"
python benchmarks/ffn_modules.py "$runs/s8/teal" --budgets 0.75,0.5,0.25 --repeats 20 --tokens 64 2>&1 \
    | grep -v "Loading weights" | tee "$out/ffn-modules-teal-s8.txt"
python benchmarks/token_overhead.py "$runs/s8/teal" 2>&1 | grep -v "Loading weights" | tee "$out/ffn-overhead-s8.txt"
ponder bench "$runs/s8/teal" --budgets 0.75,0.5,0.25 --repeats 15 --json "$out/bench-teal-s8.json"
