#!/usr/bin/env bash
# Session 20 (AMD EPYC, Zen 4): an FMA dot product for the streamed-row kernels, and moe's knobs calibrated in closed
# loop after the end-to-end phase. Raw outputs in benchmarks/results/*-s20*. Needs session 19's runs/s19/moe-router
# (benchmarks/session19.sh) for the A/Bs against the knobs it calibrated in open loop.
set -euo pipefail
out=benchmarks/results
mkdir -p runs/s20
# closed-loop knobs applied to session 19's model (the same step the conversion now ends with)
python benchmarks/moe_closed_loop.py runs/s19/moe-router runs/s20/moe-router-closed > $out/moe-closed-loop-s20.txt
for budget in 0.5 0.48 0.75 0.25 0.47; do
  ponder eval runs/s20/moe-router-closed --budget $budget --windows 20 --quiet \
    --json $out/eval-moe-router-closed-$budget-s20.json
done
python benchmarks/matched_compute.py --at 0.502,0.503,0.505 \
  teal=$out/eval-teal-search-0.49-s8.json,$out/eval-teal-0.5-s16.json \
  moe-router-s19=$out/eval-moe-router-0.49-s19.json,$out/eval-moe-router-0.5-s19.json \
  moe-router-closed-s20=$out/eval-moe-router-closed-0.47-s20.json,$out/eval-moe-router-closed-0.48-s20.json,$out/eval-moe-router-closed-0.5-s20.json \
  > $out/matched-compute-s20.txt
# the FMA dot everywhere (commit fadc2bd), then for streamed rows only (8cd78e6), against session 19's kernels
python benchmarks/moe_kernel_ab.py runs/s20/moe-router-closed --rev 8687b15 --budgets 0.5,0.25 --repeats 21 \
  > $out/moe-kernel-ab-dot-s20.txt       # at fadc2bd
python benchmarks/moe_kernel_ab.py runs/s20/moe-router-closed --rev 8687b15 --budgets 0.5,0.25 --repeats 21 \
  > $out/moe-kernel-ab-split-s20.txt     # at 8cd78e6
python benchmarks/library_ab.py runs/s20/moe-router-closed --rev 8687b15 --budgets 0.5 --repeats 9 \
  > $out/library-ab-dot-s20.txt          # at 8cd78e6
# the whole conversion with the closed loop, timed alone
tune="--set tune_steps=200 --set tune_lr=5e-4 --set tune_decay=0.5 --set tune_min_budget=0.4 --set tune_max_budget=0.6"
tune="$tune --set tune_precision=bfloat16 --set tune_router_lr=1e-3"
/usr/bin/time -v ponder convert smollm2-135m --method moe $tune -o runs/s20/moe-router \
  > runs/s20/convert-router.log 2>&1    # its time -v block: $out/convert-moe-router-s20.txt
python benchmarks/moe_closed_loop.py runs/s20/moe-router > $out/moe-router-budgets-s20.txt
ponder bench runs/s20/moe-router --budgets 0.75,0.5,0.25 --repeats 7 --json $out/bench-moe-router-s20.json
ponder bench runs/s20/moe-router --budgets 0.45,0.5 --repeats 7 --json $out/bench-moe-router-045-s20.json
python benchmarks/decode_compute.py runs/s19/moe-router runs/s20/moe-router-closed runs/s20/moe-router \
  > $out/decode-compute-s20.txt
python benchmarks/library_ab.py runs/s20/moe-router --rev HEAD --budgets 0.5 --repeats 9 > $out/library-ab-aa-s20.txt   # A/A, at e50a3a7
