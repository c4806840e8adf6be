#!/usr/bin/env bash
# Session 10: moe's experts tuned at budgets drawn only near 0.5 (issue 4's b = 0.5 goal): three conversions.
# Every number in BENCHMARKS.md "Session 10" comes from these commands; raw outputs in benchmarks/results/.
set -euo pipefail
out=benchmarks/results
mkdir -p runs/s10
convert() {  # NAME OPTIONS...
  local name=$1; shift
  /usr/bin/time -v ponder convert smollm2-135m --method moe "$@" -o runs/s10/$name --quiet 2> $out/convert-$name-s10.txt
}
convert moe-tuned-mid  --set tune_steps=180 --set tune_min_budget=0.4 --set tune_max_budget=0.6
convert moe-tuned-mid2 --set tune_steps=200 --set tune_lr=5e-4 --set tune_decay=0.5 --set tune_min_budget=0.4 \
  --set tune_max_budget=0.6
convert moe-tuned-mid3 --set tune_steps=200 --set tune_lr=8e-4 --set tune_decay=0.5 --set tune_min_budget=0.45 \
  --set tune_max_budget=0.55
for model in moe-tuned-mid moe-tuned-mid2 moe-tuned-mid3; do
  for budget in 0.75 0.5 0.49 0.35 0.25; do
    ponder eval runs/s10/$model --budget $budget --windows 20 --quiet --json $out/eval-$model-$budget-s10.json
  done
done
ponder eval runs/s10/moe-tuned-mid --budget 0.45 --windows 20 --quiet --json $out/eval-moe-tuned-mid-0.45-s10.json
best=moe-tuned-mid2  # the one BENCHMARKS.md names
ponder eval runs/s10/$best --budget 0.5 --task piqa --limit 500 --quiet --json $out/piqa500-$best-0.5-s10.json
ponder bench runs/s10/$best --budgets 0.75,0.5,0.25 --repeats 7 --quiet --json $out/bench-$best-s10.json  # at 28e4c02
e() { local m=$1; shift; local f; for f in "$@"; do printf '%s' "$out/eval-$m-$f-s10.json,"; done; }
python benchmarks/matched_compute.py --at 0.498,0.5,0.503,0.506 \
  teal-s8=$out/eval-teal-search-0.49-s8.json,$out/sweep-s8-results.jsonl#teal \
  moe-tuned-s9=$out/eval-moe-tuned-0.47-s9.json,$out/eval-moe-tuned-0.5-s9.json \
  moe-tuned-mid=$(e moe-tuned-mid 0.45 0.49)$out/eval-moe-tuned-mid-0.5-s10.json \
  moe-tuned-mid2=$(e moe-tuned-mid2 0.49)$out/eval-moe-tuned-mid2-0.5-s10.json \
  moe-tuned-mid3=$(e moe-tuned-mid3 0.49 0.5)$out/eval-moe-tuned-mid3-0.75-s10.json > $out/matched-compute-s10.txt
# after the two-neuron rows kernel (the commit after 28e4c02): kernel A/B, then the decode bench twice
python benchmarks/moe_kernel_ab.py runs/s10/$best --rev 28e4c02 --repeats 15 > $out/moe-kernel-ab-s10.txt
ponder bench runs/s10/$best --budgets 0.5 --repeats 7 --quiet --json $out/bench-$best-0.5-rows2-s10.json
ponder bench runs/s10/$best --budgets 0.5 --repeats 7 --quiet --json $out/bench-$best-0.5-rows2-run2-s10.json
