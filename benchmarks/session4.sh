#!/usr/bin/env bash
# Session-4 numbers in BENCHMARKS.md: PIQA (first 500 items) beside perplexity for every method, teal decode against
# the fused dense path, layer-parallel conversion, the route oracle, the lm-eval cross-check and two studies.
# Usage: bash benchmarks/session4.sh [RUNS_DIR]   (the sweeps resume: points already measured are not rerun)
set -euo pipefail
runs=${1:-runs}
out=benchmarks/results
mkdir -p "$out"
# Two sweeps side by side (the second on one thread) so both fit in a session; the dense points are shared.
ponder sweep smollm2-135m --methods teal,moe,predictor --budgets 0.75,0.5,0.25 --task piqa --task-limit 500 \
    -o "$runs/sweep-s4"
ponder sweep smollm2-135m --methods core,cats --budgets 0.75,0.5,0.25 --task piqa --task-limit 500 --threads 1 \
    -o "$runs/sweep-s4-b"
ponder bench "$runs/sweep-s4/models/teal" --budgets 0.75,0.5,0.25 --repeats 7 --json "$out/bench-teal-s4.json"
/usr/bin/time -v torchrun --standalone --nproc_per_node 2 -m ponder convert smollm2-135m --method nested \
    -o "$runs/smol-nested"
ponder oracle "$runs/smol-nested" --budget 0.5 --tokens 512 --json "$out/oracle-nested-0.5.json"
python benchmarks/harness_check.py smollm2-135m --limit 200 | tee "$out/harness-check-dense.txt"
python benchmarks/harness_check.py "$runs/sweep-s4/models/teal" --budget 0.5 --limit 200 \
    | tee "$out/harness-check-teal-0.5.txt"
python benchmarks/nested_refit.py | tee "$out/nested-refit.txt"
python benchmarks/teal_weighting.py | tee "$out/teal-weighting.txt"
