#!/usr/bin/env bash
# Session-2 numbers in BENCHMARKS.md: perplexity (20 windows) and PIQA (first 500 items) beside it, greedy
# allocation, nested diagnostics and speed, the report and its screenshots source.
# Usage: bash benchmarks/tasks.sh [SWEEP_DIR]   (resumable: points already in SWEEP_DIR are not rerun)
set -euo pipefail
sweep=${1:-runs/sweep-tasks}
out=benchmarks/results
mkdir -p "$out"
# Session 2 ran these points piecewise into one directory (same records; points "not run" in BENCHMARKS.md were
# still missing when the session ended); cats and predictor are the next to add.
ponder sweep smollm2-135m --methods teal,nested,teal+greedy --budgets 0.75,0.5,0.25 --task piqa --task-limit 500 \
    -o "$sweep"
python benchmarks/nested_diagnostics.py "$sweep/models/nested" | tee "$out/nested-diagnostics.txt"
cp "$sweep/report/results.md" "$out/sweep-tasks-results.md"
cp "$sweep/report/pareto.png" "$out/pareto-tasks.png"
ponder report "$sweep" --method teal+greedy --budget 0.5
ponder bench "$sweep/models/nested" --budgets 0.75,0.5,0.25 --json "$out/bench-nested.json"
