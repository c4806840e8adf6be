#!/usr/bin/env bash
# Session 15: the cats decode kernel (gate rows first, then the listed active neurons with software prefetch).
# Every number in BENCHMARKS.md "Session 15" comes from these commands; raw outputs in benchmarks/results/.
set -euo pipefail
out=benchmarks/results
quiet() { grep -v "Loading weights"; }
mkdir -p runs/s15
ponder convert smollm2-135m --method cats -o runs/s15/cats --quiet
# 9bfe1a3: coefficient pass, serial gather, column-split down sum; 04475cb: one fused region; HEAD: two phases
python benchmarks/cats_kernel_ab.py runs/s15/cats --rev 9bfe1a3 --budgets 0.75,0.5 2>&1 | quiet > $out/cats-kernel-ab-s15.txt
python benchmarks/cats_kernel_ab.py runs/s15/cats --rev 04475cb --budgets 0.75,0.5 2>&1 | quiet > $out/cats-kernel-ab-s15-prefetch.txt
ponder bench runs/s15/cats --budgets 0.75,0.5 --repeats 5 --quiet --json $out/bench-cats-s15.json
