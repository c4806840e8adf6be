#!/usr/bin/env bash
# Session 17 (AMD EPYC, Zen 4, AVX512-BF16): moe's conversion made faster (the phase's KL through the output head in
# chunks, routing.selector for calibration, bfloat16 autocast as an option, freed memory kept), rebuilt with session
# 10's command plus tune_precision=bfloat16, timed alone on the machine, and evaluated. Raw outputs in
# benchmarks/results/*-s17*. runs/s17/moe-bf16 was the same command before routing.selector and the allocator change.
set -euo pipefail
out=benchmarks/results
mkdir -p runs/s17
# the same conversion at 40e0e67 (head_kl and tune_precision, before routing.selector and the allocator):
#   -o runs/s17/moe-bf16 > runs/s17/convert-bf16.log   (time -v block: $out/convert-moe-bf16-s17.txt)
python benchmarks/moe_calibration_profile.py   # at fbeeb30~1 and at HEAD: results/moe-calibration-profile-*-s17.txt
/usr/bin/time -v ponder convert smollm2-135m --method moe --set tune_steps=200 --set tune_lr=5e-4 --set tune_decay=0.5 \
  --set tune_min_budget=0.4 --set tune_max_budget=0.6 --set tune_precision=bfloat16 -o runs/s17/moe-bf16-final \
  > runs/s17/convert-bf16-final.log 2>&1   # its time -v block: $out/convert-moe-bf16-final-s17.txt
for budget in 0.5 0.75 0.25; do
  ponder eval runs/s17/moe-bf16-final --budget $budget --windows 20 --quiet --json $out/eval-moe-bf16-final-$budget-s17.json
done
ponder eval runs/s17/moe-bf16 --budget 0.5 --windows 20 --quiet --json $out/eval-moe-bf16-0.5-s17.json
python benchmarks/tune_step_ab.py runs/s17/moe-bf16-final --repeats 5 > $out/tune-step-ab-s17.txt
python benchmarks/tune_faults_ab.py runs/s17/moe-bf16 --steps 8 --rounds 2 > $out/tune-faults-s17.txt
# 260 steps instead of 200 in the time saved (no better; results/*-bf16-260-s17*)
/usr/bin/time -v ponder convert smollm2-135m --method moe --set tune_steps=260 --set tune_lr=5e-4 --set tune_decay=0.5 \
  --set tune_min_budget=0.4 --set tune_max_budget=0.6 --set tune_precision=bfloat16 -o runs/s17/moe-bf16-260 \
  > runs/s17/convert-bf16-260.log 2>&1
for budget in 0.5 0.49; do
  ponder eval runs/s17/moe-bf16-260 --budget $budget --windows 20 --quiet --json $out/eval-moe-bf16-260-$budget-s17.json
done
