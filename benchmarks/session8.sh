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
# teal's split search (the default since this session) against the uniform split, then its PIQA and speed.
ponder sweep smollm2-135m --methods teal,teal:split=uniform --budgets 1,0.75,0.5,0.35,0.25 --windows 20 \
    -o "$runs/sweep-s8"
cp "$runs/sweep-s8/results.jsonl" "$out/sweep-s8-results.jsonl"
cp "$runs/sweep-s8/report/pareto.png" "$out/pareto-s8.png"
python benchmarks/teal_split.py "$runs/sweep-s8/models/teal" 2>&1 | grep -v "Loading weights" \
    | tee "$out/teal-split-s8.txt"
/usr/bin/time -v ponder convert smollm2-135m --method teal -o "$runs/s8/teal-search" --overwrite 2>&1 \
    | grep -E "Elapsed|Maximum resident" | tee "$out/convert-teal-s8.txt"
/usr/bin/time -v ponder convert smollm2-135m --method teal --set split=uniform -o "$runs/s8/teal-uniform" \
    --overwrite 2>&1 | grep -E "Elapsed|Maximum resident" | tee "$out/convert-teal-uniform-s8.txt"
python benchmarks/teal_lowrank.py "$runs/sweep-s8/models/teal" 2>&1 | grep -v "Loading weights" \
    | tee "$out/teal-lowrank-s8.txt"
ponder eval "$runs/sweep-s8/models/teal" --budget 0.49 --json "$out/eval-teal-search-0.49-s8.json"  # equal compute
for budget in 0.75 0.5; do
    ponder eval "$runs/sweep-s8/models/teal" --budget "$budget" --task piqa --limit 500 \
        --json "$out/piqa500-teal-search-$budget-s8.json"
done
ponder bench "$runs/sweep-s8/models/teal" --budgets 0.75,0.5,0.25 --repeats 10 --json "$out/bench-teal-search-s8.json"
# moe's decode against the dense path as it is now (bound FFN calls on both sides; issue 4's 1.3x was session 3's).
[ -d "$runs/s8/moe" ] || ponder convert smollm2-135m --method moe -o "$runs/s8/moe"
ponder bench "$runs/s8/moe" --budgets 0.75,0.5,0.25 --repeats 7 --json "$out/bench-moe-s8.json"
