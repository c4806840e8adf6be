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
