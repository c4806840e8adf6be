#!/usr/bin/env bash
# Session-7 numbers in BENCHMARKS.md: nested learners with the gate that takes the budget as an input
# (router=budget, the default since this session), with and without the end-to-end phase (tune_steps), beside the
# error-threshold router; then the tuning variants and decode speed of the budget gate.
# Run it alone on the machine (about 1 h 30 min here).
# Usage: bash benchmarks/session7.sh [RUNS_DIR]
set -euo pipefail
runs=${1:-runs}
out=benchmarks/results
# The committed results file names the variants as they were when it ran: "nested" is the error router (then the
# default) and the tuned one drew budgets from the whole grid (tune_min_budget=0.1; the default became 0.3 after).
ponder sweep smollm2-135m \
    --methods nested:router=budget:tune_steps=100:tune_min_budget=0.1,nested:router=budget,nested:router=error \
    --budgets 0.9,0.75,0.5,0.25 -o "$runs/sweep-s7"
cp "$runs/sweep-s7/results.jsonl" "$out/sweep-s7-results.jsonl"
python benchmarks/tune_variants.py "$runs/sweep-s7/models/nested:router=budget" --steps 100 --tune-min 0.3 \
    | grep -v "^tune gates" | tee "$out/tune-variants-s7.txt"
ponder bench "$runs/sweep-s7/models/nested:router=budget" --budgets 0.75,0.5 --repeats 5 \
    --json "$out/bench-nested-budget-s7.json"
ponder oracle "$runs/sweep-s7/models/nested:router=budget" --budget 0.5 --tokens 512 \
    --json "$out/oracle-nested-budget-0.5-s7.json" | tee "$out/oracle-nested-budget-0.5-s7.txt"
