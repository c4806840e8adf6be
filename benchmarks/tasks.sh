#!/usr/bin/env bash
# Session-2 numbers in BENCHMARKS.md: perplexity + PIQA (first 500 items) for every method at 0.75/0.5/0.25,
# nested speed, and the lm-eval adapter cross-check.
# Usage: bash benchmarks/tasks.sh [SWEEP_DIR]   (resumable: points already in SWEEP_DIR are not rerun)
set -euo pipefail
sweep=${1:-runs/sweep-tasks}
out=benchmarks/results
mkdir -p "$out"
ponder sweep smollm2-135m --methods teal,teal+greedy,nested,predictor,cats --budgets 0.75,0.5,0.25 \
    --task piqa --task-limit 500 -o "$sweep"
cp "$sweep/report/results.md" "$out/sweep-tasks-results.md"
cp "$sweep/report/pareto.png" "$out/pareto-tasks.png"
ponder report "$sweep" --method nested --budget 0.5
python benchmarks/ffn_modules.py "$sweep/models/nested" --budgets 0.75,0.5,0.25 --repeats 20 | tee "$out/ffn-modules-nested.txt"
ponder bench "$sweep/models/nested" --budgets 0.75,0.5,0.25 --json "$out/bench-nested.json"
