#!/usr/bin/env bash
# Session-3 numbers in BENCHMARKS.md: dense → MoE quality (every policy, pseudo experts on/off, teal beside),
# the oracle bound, and the speed of every method against the dense lean path (fused kernels in both).
# Usage: bash benchmarks/moe.sh [SWEEP_DIR]   (resumable: finished points and conversions are kept)
set -euo pipefail
sweep=${1:-runs/sweep-moe}
out=benchmarks/results
mkdir -p "$out"
if [ ! -d "$sweep/models/moe" ]; then  # the default moe conversion, timed (the sweep reuses it)
  /usr/bin/time -v ponder convert smollm2-135m --method moe -o "$sweep/models/moe" --resume 2>&1 \
    | grep -E "converted|Elapsed|Maximum resident" | tee "$out/convert-moe-s3.txt"
fi
ponder sweep smollm2-135m --budgets 1,0.75,0.5,0.25 -o "$sweep" \
  --methods moe,moe@top-k,moe@top-p,moe@dynamic-k,moe:pseudo_experts=none,teal
ponder sweep smollm2-135m --budgets 0.75,0.5,0.35,0.25 -o "$sweep" --methods cats,predictor,core
ponder sweep smollm2-135m --budgets 0.75,0.5,0.25 -o "$sweep" --task piqa \
  --methods teal,cats,predictor,core,moe
cp "$sweep/report/results.md" "$out/sweep-moe-results.md"
cp "$sweep/report/pareto.png" "$out/pareto-moe.png"
python benchmarks/moe_oracle.py --windows 5 | tee "$out/moe-oracle.txt"
ponder eval "$sweep/models/teal" --budget 0.5 --windows 5
python benchmarks/moe_router.py "$sweep/models/moe" | tee "$out/moe-router.txt"
ponder inspect "$sweep/models/moe" --budget 0.5 --json "$out/inspect-moe-s3.json" | tee "$out/inspect-moe-s3.txt"
# Speed: run on an idle machine.
python benchmarks/decode_breakdown.py --repeats 7 | tee "$out/decode-breakdown-s3.txt"
python benchmarks/ffn_modules.py "$sweep/models/moe" "$sweep/models/teal" "$sweep/models/core" \
  --budgets 0.75,0.5,0.25 --repeats 20 | tee "$out/ffn-modules-session3.txt"
python benchmarks/moe_prefill.py "$sweep/models/moe" | tee "$out/moe-prefill.txt"
for method in moe teal core; do
  ponder bench "$sweep/models/$method" --budgets 0.75,0.5,0.25 --repeats 7 --json "$out/bench-$method-s3.json"
done
