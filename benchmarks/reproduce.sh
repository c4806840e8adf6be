#!/usr/bin/env bash
# The commands behind every table in BENCHMARKS.md, in its order. Conversions go to runs/ (ignored by git); raw
# outputs to benchmarks/results/. Quality is a few hours of CPU in all (the moe recipe alone ~27 minutes a
# conversion); run the speed part on an otherwise idle machine.
#   bash benchmarks/reproduce.sh [quality|speed|tasks|all]
set -euo pipefail
out=benchmarks/results
part=${1:-all}
recipe=(--set tune_steps=200 --set tune_lr=5e-4 --set tune_decay=0.5 --set tune_min_budget=0.4
  --set tune_max_budget=0.6 --set tune_precision=bfloat16 --set tune_router_lr=1e-3)
mkdir -p runs "$out"
if [[ $part == quality || $part == all ]]; then
  ponder eval smollm2-135m --windows 20
  ponder sweep smollm2-135m --methods teal,teal:split=uniform --budgets 1,0.75,0.5,0.35,0.25 -o runs/sweep-teal
  ponder sweep smollm2-135m --methods teal,cats,predictor,core,moe --budgets 0.75,0.5,0.25 -o runs/sweep-methods \
    --task piqa --task-limit 500
  ponder sweep smollm2-135m --methods nested --budgets 0.9,0.75,0.5,0.25 -o runs/sweep-nested
  ponder sweep smollm2-135m --methods skip,skip:stand_in=none --budgets 0.9,0.75,0.5 -o runs/sweep-skip \
    --task piqa --task-limit 500
  [ -d runs/moe-recipe ] || ponder convert smollm2-135m --method moe "${recipe[@]}" -o runs/moe-recipe
  [ -d runs/moe-e32-recipe ] || ponder convert smollm2-135m --method moe "${recipe[@]}" \
    --set experts=32 --set shared_experts=4 -o runs/moe-e32-recipe
  for b in 0.75 0.5 0.48 0.47 0.25; do
    ponder eval runs/moe-recipe --budget $b --windows 20 --json $out/eval-moe-recipe-$b.json
  done
  for b in 0.5 0.47; do
    ponder eval runs/moe-e32-recipe --budget $b --windows 20 --json $out/eval-moe-e32-recipe-$b.json
  done
  ponder convert smollm2-135m --method teal -o runs/teal --overwrite
  for b in 0.5 0.49; do
    ponder eval runs/teal --budget $b --windows 20 --json $out/eval-teal-$b.json
  done
  ponder convert smollm2-135m --method teal --set score=wina -o runs/teal-wina --overwrite
  for b in 0.75 0.5 0.35 0.25; do
    ponder eval runs/teal-wina --budget $b --windows 20 --json $out/eval-teal-wina-$b.json
  done
  python benchmarks/entropy_budget.py runs/teal --out runs/entropy-budget
  cp runs/entropy-budget/entropy-budget.json runs/entropy-budget/entropy-budget.md $out/
  [ -d runs/cats ] || ponder convert smollm2-135m --method cats -o runs/cats
  for b in 0.75 0.5; do
    ponder eval runs/cats --budget $b --windows 6 --json $out/eval-cats-$b.json
    ponder eval runs/cats --weights q4_1 --budget $b --windows 6 --json $out/eval-cats-q4_1-$b.json
  done
  python benchmarks/matched_compute.py --at 0.502,0.503,0.505 \
    teal=$out/eval-teal-0.49.json,$out/eval-teal-0.5.json \
    moe=$out/eval-moe-recipe-0.47.json,$out/eval-moe-recipe-0.5.json \
    moe-e32=$out/eval-moe-e32-recipe-0.47.json,$out/eval-moe-e32-recipe-0.5.json
fi
if [[ $part == speed || $part == all ]]; then
  python benchmarks/decode_breakdown.py --repeats 7
  ponder bench runs/teal --budgets 0.5,0.25 --repeats 7 --ceiling --json $out/bench-teal-ceiling.json
  ponder bench runs/moe-recipe --budgets 0.5,0.45 --repeats 7 --ceiling --json $out/bench-moe-ceiling.json
  ponder bench runs/moe-e32-recipe --budgets 0.5 --repeats 7 --ceiling --json $out/bench-moe-e32-ceiling.json
  python benchmarks/decode_ceiling.py runs/teal runs/moe-recipe runs/moe-e32-recipe --fractions 0.5,0.53,0.583 \
    --repeats 15
  python benchmarks/llamacpp_peer.py --formats Q8_0,Q4_1-shipped,Q4_1,Q4_0 --ponder-formats fp32,q8_0,q4_1,q4_0 \
    --rounds 5 --windows 0 --out runs/peer-quiet
  cp runs/peer-quiet/peer.json $out/llamacpp-peer-quiet.json && cp runs/peer-quiet/peer.md $out/llamacpp-peer-quiet.md
  python benchmarks/speculative.py --formats q4_1,q8_0,fp32 --rounds 3 --new-tokens 128 --out runs/speculative
  cp runs/speculative/speculative.json runs/speculative/speculative.md $out/
fi
if [[ $part == tasks || $part == all ]]; then
  ponder eval smollm2-135m --task piqa --json $out/piqa-dense.json
  ponder eval runs/teal --budget 0.5 --task piqa --limit 500 --json $out/piqa500-teal-0.5.json
  python benchmarks/harness_check.py smollm2-135m --limit 200
fi
