#!/usr/bin/env bash
# Session-5 numbers in BENCHMARKS.md: the PIQA points session 4 left (the same two sweeps, resumed; run them alone)
# and static slices of the nested model, uniform against greedy per-layer widths (Mix'n'Match).
# Usage: bash benchmarks/session5.sh [RUNS_DIR]   (RUNS_DIR/smol-nested from benchmarks/session4.sh)
set -euo pipefail
runs=${1:-runs}
out=benchmarks/results
ponder sweep smollm2-135m --methods teal,moe,predictor --budgets 0.75,0.5,0.25 --task piqa --task-limit 500 \
    -o "$runs/sweep-s4"
ponder sweep smollm2-135m --methods core,cats --budgets 0.75,0.5,0.25 --task piqa --task-limit 500 \
    -o "$runs/sweep-s4-b"
cp "$runs/sweep-s4/results.jsonl" "$out/sweep-s4-results.jsonl"
cp "$runs/sweep-s4-b/results.jsonl" "$out/sweep-s4-b-results.jsonl"
python benchmarks/mixnmatch.py "$runs/smol-nested" --widths 0.75,0.5 --repeats 5 | tee "$out/mixnmatch.txt"
for b in 0.75 0.5; do  # the same nested model routed per token, for the comparison
    ponder eval "$runs/smol-nested" --budget $b --quiet --json "$out/nested-routed-$b.json"
done
