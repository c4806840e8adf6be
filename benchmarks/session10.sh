#!/usr/bin/env bash
# Session 10: moe's experts tuned at budgets drawn from [0.4, 0.6] only (issue 4's b = 0.5 goal), 180 steps.
# Every number in BENCHMARKS.md "Session 10" comes from these commands; raw outputs in benchmarks/results/.
set -euo pipefail
out=benchmarks/results
mkdir -p runs/s10
/usr/bin/time -v ponder convert smollm2-135m --method moe --set tune_steps=180 --set tune_min_budget=0.4 \
  --set tune_max_budget=0.6 -o runs/s10/moe-tuned-mid --quiet 2> $out/convert-moe-tuned-mid-s10.txt
for budget in 0.75 0.5 0.45 0.35 0.25; do
  ponder eval runs/s10/moe-tuned-mid --budget $budget --windows 20 --quiet --json $out/eval-moe-tuned-mid-$budget-s10.json
done
ponder eval runs/s10/moe-tuned-mid --budget 0.5 --task piqa --limit 500 --quiet --json $out/piqa500-moe-tuned-mid-0.5-s10.json
ponder bench runs/s10/moe-tuned-mid --budgets 0.75,0.5,0.25 --repeats 7 --quiet --json $out/bench-moe-tuned-mid-s10.json
