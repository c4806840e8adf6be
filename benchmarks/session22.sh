#!/usr/bin/env bash
# Session 22 (AMD EPYC, Zen 4): nested's gate made monotone in its budget input (beside the FiLM gate it replaces),
# and the ceiling any FFN executor can reach in a lean decode step. Raw outputs in benchmarks/results/*-s22*.
# Needs runs/s21/teal, runs/s21/moe-e32-router (session21.sh) and runs/s20/moe-router (session20.sh); makes
# runs/s22/*. Run it alone on the machine (about 45 minutes here).
set -euo pipefail
out=benchmarks/results
quiet() { grep -v "Loading weights"; }
# both gates from their own conversions (5-6 minutes each), 20 windows of WikiText-2 test
ponder sweep smollm2-135m --methods nested,nested:budget_gate=film --budgets 0.9,0.75,0.5,0.25 \
  -o runs/s22/sweep-gate --quiet
cp runs/s22/sweep-gate/results.jsonl $out/sweep-gate-s22-results.jsonl
python benchmarks/nested_monotone.py runs/s22/sweep-gate/models/nested \
  "runs/s22/sweep-gate/models/nested:budget_gate=film" --tokens 1024 --step 0.02 2>&1 | quiet \
  > $out/nested-monotone-s22.txt
# the ceiling of any width executor at decode, beside teal and moe (two runs: the machine's state moves them)
models="runs/s21/teal runs/s20/moe-router runs/s21/moe-e32-router"  # session21.sh, session20.sh
for run in "" -run2; do
  python benchmarks/decode_ceiling.py $models --fractions 0.5,0.53,0.583 --repeats 15 2>&1 | quiet \
    > $out/decode-ceiling$run-s22.txt
done
python benchmarks/teal_phases.py runs/s21/teal --budgets 0.5 --repeats 15 2>&1 | quiet > $out/teal-phases-s22.txt
# the ceiling inside ponder bench, per budget at the compute it spent
ponder bench runs/s21/teal --budgets 0.5,0.25 --repeats 7 --ceiling --quiet --json $out/bench-teal-ceiling-s22.json
ponder bench runs/s20/moe-router --budgets 0.5,0.45 --repeats 7 --ceiling --quiet \
  --json $out/bench-moe-router-ceiling-s22.json
ponder bench runs/s21/moe-e32-router --budgets 0.5 --repeats 7 --ceiling --quiet \
  --json $out/bench-moe-e32-router-ceiling-s22.json
