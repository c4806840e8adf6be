#!/usr/bin/env bash
# Session 11: moe's grouped C kernel for batches (prefill). Every number in BENCHMARKS.md "Session 11" comes from
# these commands; raw outputs in benchmarks/results/. The model is session 10's recommended conversion (its
# command is in benchmarks/session10.sh, convert moe-tuned-mid2).
set -euo pipefail
out=benchmarks/results
model=runs/s10/moe-tuned-mid2
python benchmarks/moe_prefill.py $model --repeats 7 > $out/moe-prefill-s11.txt
ponder bench $model --budgets 0.75,0.5,0.25 --repeats 7 --quiet --json $out/bench-moe-tuned-mid2-s11.json
ponder bench $model --budgets 0.5 --repeats 7 --quiet --json $out/bench-moe-tuned-mid2-0.5-run2-s11.json
# teal (issue 3): eight rows a pass (the commit after cb73526), kernel A/B, FFN modules, end-to-end decode
ponder convert smollm2-135m --method teal -o runs/s11/teal --quiet
python benchmarks/teal_kernel_ab.py runs/s11/teal --rev cb73526 --repeats 20 2>&1 | grep -v "Loading weights" \
  > $out/teal-kernel-s11.txt
python benchmarks/ffn_modules.py runs/s11/teal --budgets 0.75,0.5,0.25 --repeats 20 --tokens 64 2>&1 \
  | grep -v "Loading weights" > $out/ffn-modules-teal-s11.txt
ponder bench runs/s11/teal --budgets 0.75,0.5,0.25 --repeats 15 --quiet --json $out/bench-teal-s11.json
# moe decode: the router's first layer on both threads (the commit after 423c1d9), then the bench again
python benchmarks/moe_kernel_ab.py $model --rev 423c1d9 --repeats 15 2>&1 | grep -v "Loading weights" \
  > $out/moe-kernel-ab-s11.txt
ponder bench $model --budgets 0.5 --repeats 7 --quiet --json $out/bench-moe-tuned-mid2-0.5-router-s11.json
