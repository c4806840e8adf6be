#!/usr/bin/env bash
# Session 16, on an AMD EPYC (Zen 4) machine where earlier sessions had another CPU: moe-tuned-mid2 rebuilt with
# session 10's command, then every end-to-end number of issues 3 and 4 re-measured. Raw outputs in
# benchmarks/results/*-s16*. runs/s14/teal is `ponder convert smollm2-135m --method teal --set split=search`.
set -euo pipefail
out=benchmarks/results
mkdir -p runs/s16
/usr/bin/time -v ponder convert smollm2-135m --method moe --set tune_steps=200 --set tune_lr=5e-4 --set tune_decay=0.5 \
  --set tune_min_budget=0.4 --set tune_max_budget=0.6 -o runs/s16/moe-tuned-mid2 --quiet 2> $out/convert-moe-tuned-mid2-s16.txt
python benchmarks/moe_kernel_ab.py runs/s16/moe-tuned-mid2 --rev 2900a9f --repeats 25   # see moe-kernel-ab-s16.txt
python benchmarks/decode_breakdown.py --repeats 7 > $out/decode-breakdown-s16.txt
python benchmarks/teal_kernel_ab.py runs/s14/teal --rev HEAD --repeats 15 > $out/teal-kernel-ab-s16.txt  # teal vs dense kernel
python benchmarks/teal_phases.py runs/s14/teal --repeats 15 > $out/teal-phases-s16.txt
ponder bench runs/s16/moe-tuned-mid2 --budgets 0.75,0.5,0.25 --repeats 7 --quiet --json $out/bench-moe-tuned-mid2-s16.json
ponder bench runs/s14/teal --budgets 0.75,0.5,0.25 --repeats 7 --quiet --json $out/bench-teal-s16.json
# both again (…-run2-s16.json)
for budget in 0.75 0.5 0.25; do
  ponder eval runs/s16/moe-tuned-mid2 --budget $budget --windows 20 --quiet --json $out/eval-moe-tuned-mid2-$budget-s16.json
done
# the dense row of `ponder bench` (the adaptive model at budget 1) against the model it came from; before and after
# the bound dense kernel at budget 1 (results/baseline-check-s16.txt)
python benchmarks/budget_one_ab.py runs/s16/moe-tuned-mid2 runs/s14/teal
ponder bench runs/s16/moe-tuned-mid2 --budgets 0.75,0.5,0.25 --repeats 7 --quiet --json $out/bench-moe-tuned-mid2-fair-s16.json
# teal kernel, kept inputs split between the threads (2d0f3a7): kernel A/B three times, phases, two end-to-end benches
python benchmarks/teal_kernel_ab.py runs/s14/teal --rev ce230cf --repeats 15   # see teal-kernel-rowsplit-s16.txt
python benchmarks/teal_phases.py runs/s14/teal --repeats 15
ponder bench runs/s14/teal --budgets 0.75,0.5,0.25 --repeats 7 --quiet --json $out/bench-teal-rowsplit-s16.json
ponder bench runs/s14/teal --budgets 0.75,0.5,0.25 --repeats 7 --quiet --json $out/bench-teal-rowsplit-run2-s16.json
python benchmarks/decode_kernel_ab.py runs/s14/teal --rev ce230cf --budgets 0.5,0.25 --repeats 7  # twice
ponder eval runs/s14/teal --budget 0.5 --windows 20 --quiet --json $out/eval-teal-0.5-s16.json
python benchmarks/moe_token_path_ab.py runs/s16/moe-tuned-mid2   # after MoEFFN.token_forward
