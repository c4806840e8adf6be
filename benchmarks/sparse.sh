#!/usr/bin/env bash
# Sparse-method numbers in BENCHMARKS.md: quality sweep, FFN executor and module times, end-to-end decode.
# Usage: bash benchmarks/sparse.sh [SWEEP_DIR]   (the sweep resumes if SWEEP_DIR already holds points)
set -euo pipefail
sweep=${1:-runs/sweep}
out=benchmarks/results
mkdir -p "$out"
ponder sweep smollm2-135m --methods teal,cats,predictor --budgets 1,0.75,0.5,0.35,0.25 --windows 20 -o "$sweep"
cp "$sweep/report/results.md" "$out/sweep-results.md"
cp "$sweep/report/pareto.png" "$out/pareto.png"
python benchmarks/ffn_kernels.py --repeats 15 | tee "$out/ffn-kernels.txt"
python benchmarks/ffn_modules.py "$sweep/models/teal" "$sweep/models/cats" "$sweep/models/predictor" \
    --budgets 0.75,0.5,0.25 --repeats 20 | tee "$out/ffn-modules.txt"
ponder bench "$sweep/models/teal" --budgets 0.5,0.25 --json "$out/bench-teal.json"
ponder bench "$sweep/models/cats" --budgets 0.75,0.5 --json "$out/bench-cats.json"
ponder bench "$sweep/models/predictor" --budgets 0.5,0.25 --json "$out/bench-predictor.json"
