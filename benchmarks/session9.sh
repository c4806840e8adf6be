#!/usr/bin/env bash
# Session 9: moe's end-to-end expert tuning (issue 4) beside the untuned conversion, and two teal diagnostics
# (issue 3). Every number in BENCHMARKS.md "Session 9" comes from these commands; raw outputs in benchmarks/results/.
set -euo pipefail
out=benchmarks/results
mkdir -p runs/s9
ponder convert smollm2-135m --method moe -o runs/s9/moe --quiet                                   # 7 min 24 s
ponder convert smollm2-135m --method moe --set tune_steps=150 -o runs/s9/moe-tuned --quiet         # 23 min 49 s
for model in moe moe-tuned; do
  for budget in 0.75 0.5 0.35 0.25; do
    ponder eval runs/s9/$model --budget $budget --windows 20 --quiet --json $out/eval-$model-$budget-s9.json
  done
done
ponder eval runs/s9/moe-tuned --budget 0.47 --windows 20 --quiet --json $out/eval-moe-tuned-0.47-s9.json
ponder eval runs/s9/moe-tuned --budget 0.5 --task piqa --limit 500 --quiet --json $out/piqa500-moe-tuned-0.5-s9.json
ponder bench runs/s9/moe-tuned --budgets 0.75,0.5,0.25 --repeats 7 --quiet --json $out/bench-moe-tuned-s9.json
ponder bench runs/s9/moe --budgets 0.5 --repeats 7 --quiet --json $out/bench-moe-s9.json
python benchmarks/teal_rotation.py > $out/teal-rotation-s9.txt
python benchmarks/teal_union.py > $out/teal-union-s9.txt
