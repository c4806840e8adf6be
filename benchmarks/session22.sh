#!/usr/bin/env bash
# Session 22 (AMD EPYC, Zen 4): nested's gate made monotone in its budget input (beside the FiLM gate it replaces),
# and the ceiling any FFN executor can reach in a lean decode step. Raw outputs in benchmarks/results/*-s22*.
# Makes runs/s22/*. Run it alone on the machine (about 35 minutes here).
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
