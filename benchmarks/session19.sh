#!/usr/bin/env bash
# Session 19 (AMD EPYC, Zen 4): where moe's one-token kernel spends its time, the pseudo expert's stand-in summed
# row by row, and routers trained end to end with the experts (tune_router_lr). Raw outputs in
# benchmarks/results/*-s19*. Session 18's recovered experiments: moe_router_refit.py and moe_packed_rows.c.
set -euo pipefail
out=benchmarks/results
mkdir -p runs/s19
ponder convert smollm2-135m --method moe -o runs/s19/moe --quiet                        # untuned, 5:33 here
python benchmarks/moe_kernel_parts.py runs/s19/moe --budgets 0.5,0.25 --repeats 15 > $out/moe-kernel-parts-s19.txt
# the stand-in summed row by row (sparse_ffn.c moe_ffn), against the kernel before it (--rev: the commit before it)
python benchmarks/moe_kernel_ab.py runs/s19/moe --rev 3261cbe --budgets 0.5,0.25 --repeats 15 > $out/moe-kernel-ab-comp-s19.txt
python benchmarks/moe_kernel_parts.py runs/s19/moe --budgets 0.5,0.25 --repeats 15 > $out/moe-kernel-parts-after-s19.txt
# routers trained with the experts: session 17's command plus tune_router_lr, seeds 0 and 1; seed 1 without routers
tune="--set tune_steps=200 --set tune_lr=5e-4 --set tune_decay=0.5 --set tune_min_budget=0.4 --set tune_max_budget=0.6"
tune="$tune --set tune_precision=bfloat16"
/usr/bin/time -v ponder convert smollm2-135m --method moe $tune --set tune_router_lr=1e-3 -o runs/s19/moe-router \
  > runs/s19/convert-router.log 2>&1    # its time -v block: $out/convert-moe-router-s19.txt
/usr/bin/time -v ponder convert smollm2-135m --method moe $tune --set tune_router_lr=1e-3 --set seed=1 \
  -o runs/s19/moe-router-seed1 > runs/s19/convert-router-seed1.log 2>&1   # $out/convert-moe-router-seed1-s19.txt
ponder convert smollm2-135m --method moe $tune --set seed=1 -o runs/s19/moe-seed1 > runs/s19/convert-seed1.log 2>&1
for budget in 0.5 0.49 0.75 0.25; do
  ponder eval runs/s19/moe-router --budget $budget --windows 20 --quiet --json $out/eval-moe-router-$budget-s19.json
done
for budget in 0.51 0.5 0.49 0.75 0.25; do
  ponder eval runs/s19/moe-router-seed1 --budget $budget --windows 20 --quiet \
    --json $out/eval-moe-router-seed1-$budget-s19.json
done
for budget in 0.51 0.5 0.49; do
  ponder eval runs/s19/moe-seed1 --budget $budget --windows 20 --quiet --json $out/eval-moe-seed1-$budget-s19.json
done
python benchmarks/matched_compute.py --at 0.502,0.503,0.505 \
  teal=$out/eval-teal-search-0.49-s8.json,$out/eval-teal-0.5-s16.json \
  moe-router-s19=$out/eval-moe-router-0.49-s19.json,$out/eval-moe-router-0.5-s19.json \
  moe-router-seed1-s19=$out/eval-moe-router-seed1-0.49-s19.json,$out/eval-moe-router-seed1-0.5-s19.json,$out/eval-moe-router-seed1-0.51-s19.json \
  moe-seed1-s19=$out/eval-moe-seed1-0.49-s19.json,$out/eval-moe-seed1-0.5-s19.json,$out/eval-moe-seed1-0.51-s19.json \
  > $out/matched-compute-s19.txt
python benchmarks/decode_kernel_ab.py runs/s19/moe-router --rev 3261cbe --budgets 0.5 --repeats 7 > $out/decode-kernel-ab-comp-s19.txt
python benchmarks/decode_kernel_ab.py runs/s19/moe-router --rev 3261cbe --budgets 0.5 --repeats 11 >> $out/decode-kernel-ab-comp-s19.txt
python benchmarks/moe_kernel_ab.py runs/s19/moe-router --rev 3261cbe --budgets 0.5 --repeats 15 \
  > $out/moe-kernel-ab-comp-router-s19.txt
ponder bench runs/s19/moe-router --budgets 0.75,0.5,0.25 --repeats 7 --quiet --json $out/bench-moe-router-s19.json
