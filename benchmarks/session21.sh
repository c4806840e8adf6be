#!/usr/bin/env bash
# Session 21 (AMD EPYC, Zen 4): the greedy step's head screened through an int8 copy (exact argmax, a quarter of the
# head's reads), FFN work counted outside nn.Module attributes, and moe's expert size. Raw outputs in
# benchmarks/results/*-s21*.
# Needs runs/s20/moe-router (benchmarks/session20.sh) and runs/s19/moe (session19.sh); makes runs/s21/*.
set -euo pipefail
out=benchmarks/results
quiet() { grep -v "Loading weights"; }
[ -d runs/s21/teal ] || ponder convert smollm2-135m --method teal --set split=search -o runs/s21/teal --quiet
# where a decode step goes, with the head alone both ways (at 148c11f)
python benchmarks/decode_breakdown.py --repeats 7 2>&1 | quiet > $out/decode-breakdown-s21.txt
# first benches at 148c11f (screened head, counting on the module)
ponder bench runs/s20/moe-router --budgets 0.5,0.45 --repeats 7 --quiet --json $out/bench-moe-router-s21.json
ponder bench runs/s21/teal --budgets 0.5,0.25 --repeats 7 --quiet --json $out/bench-teal-s21.json
python benchmarks/greedy_head_ab.py runs/s20/moe-router runs/s21/teal --repeats 15 2>&1 | quiet \
  > $out/greedy-head-ab-s21.txt
# at 63262a7 (Tally): the same, more rounds
python benchmarks/greedy_head_ab.py runs/s20/moe-router runs/s21/teal --repeats 21 2>&1 | quiet \
  > $out/greedy-head-ab-run2-s21.txt
ponder bench runs/s20/moe-router --budgets 0.5,0.45 --repeats 11 --quiet --json $out/bench-moe-router-run2-s21.json
ponder bench runs/s21/teal --budgets 0.5,0.25 --repeats 11 --quiet --json $out/bench-teal-run2-s21.json
# expert size (untuned conversions with the same 192 shared neurons): the one-token kernel's cost per unit, quality
for e in 32:4 128:16; do
  n=${e%%:*}; s=${e##*:}
  [ -d runs/s21/moe-e$n ] || /usr/bin/time -v ponder convert smollm2-135m --method moe --set experts=$n \
    --set shared_experts=$s -o runs/s21/moe-e$n --quiet > runs/s21/convert-e$n.log 2>&1
done
python benchmarks/moe_granularity.py runs/s21/moe-e32 runs/s19/moe runs/s21/moe-e128 --budget 0.5 --repeats 15 2>&1 \
  | quiet > $out/moe-granularity-s21.txt
python benchmarks/moe_granularity.py runs/s21/moe-e32 runs/s19/moe runs/s21/moe-e128 --budget 0.5 --repeats 40 2>&1 \
  | quiet > $out/moe-granularity-run2-s21.txt
for model in s21/moe-e32 s19/moe s21/moe-e128; do
  for budget in 0.5 0.45; do
    ponder eval runs/$model --budget $budget --windows 20 --quiet --json $out/eval-${model#*/}-$budget-s21.json
  done
done
python benchmarks/matched_compute.py --at 0.48,0.5,0.52 \
  moe-e32=$out/eval-moe-e32-0.45-s21.json,$out/eval-moe-e32-0.5-s21.json \
  moe-e64=$out/eval-moe-0.45-s21.json,$out/eval-moe-0.5-s21.json \
  moe-e128=$out/eval-moe-e128-0.45-s21.json,$out/eval-moe-e128-0.5-s21.json > $out/matched-compute-granularity-s21.txt
# the best recipe (sessions 19-20) with 32 experts of 48 neurons
tune="--set tune_steps=200 --set tune_lr=5e-4 --set tune_decay=0.5 --set tune_min_budget=0.4 --set tune_max_budget=0.6"
tune="$tune --set tune_precision=bfloat16 --set tune_router_lr=1e-3"
/usr/bin/time -v ponder convert smollm2-135m --method moe --set experts=32 --set shared_experts=4 $tune \
  -o runs/s21/moe-e32-router > runs/s21/convert-e32-router.log 2>&1
grep -E "Command being timed|Elapsed|Maximum resident" runs/s21/convert-e32-router.log > $out/convert-moe-e32-router-s21.txt
for budget in 0.5 0.47; do
  ponder eval runs/s21/moe-e32-router --budget $budget --windows 20 --quiet --json $out/eval-moe-e32-router-$budget-s21.json
done
python benchmarks/matched_compute.py --at 0.502,0.505,0.51 \
  moe-router-closed-s20=$out/eval-moe-router-closed-0.47-s20.json,$out/eval-moe-router-closed-0.48-s20.json,$out/eval-moe-router-closed-0.5-s20.json \
  moe-e32-router=$out/eval-moe-e32-router-0.47-s21.json,$out/eval-moe-e32-router-0.5-s21.json \
  > $out/matched-compute-e32-s21.txt
ponder bench runs/s21/moe-e32-router --budgets 0.5 --repeats 9 --quiet --json $out/bench-moe-e32-router-s21.json
# the two routers-trained moe models (64 x 24 of session 20, 32 x 48 here) in one process, each beside dense
python benchmarks/greedy_head_ab.py runs/s20/moe-router runs/s21/moe-e32-router --repeats 11 2>&1 | quiet \
  > $out/greedy-head-ab-e32-s21.txt
# the counting's Python cost, before (148c11f, e.g. in a git worktree) and after 63262a7
python benchmarks/decode_profile.py runs/s20/moe-router 2>&1 | quiet > $out/decode-profile-before-s21.txt  # at 148c11f
python benchmarks/decode_profile.py runs/s20/moe-router 2>&1 | quiet > $out/decode-profile-after-s21.txt
