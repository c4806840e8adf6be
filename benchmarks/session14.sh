#!/usr/bin/env bash
# Session 14: the rows kernel (moe, predictor, nested decode) runs one neuron a pass, one row at a time.
# Every number in BENCHMARKS.md "Session 14" comes from these commands; raw outputs in benchmarks/results/.
set -euo pipefail
out=benchmarks/results
quiet() { grep -v "Loading weights"; }
mkdir -p runs/s14
ponder convert smollm2-135m --method moe -o runs/s14/moe --quiet
python benchmarks/moe_kernel_ab.py runs/s14/moe --rev 11677fc --repeats 15 2>&1 | quiet > $out/moe-kernel-ab-s14.txt
python benchmarks/moe_kernel_ab.py runs/s14/moe --rev 11677fc --repeats 25 2>&1 | quiet > $out/moe-kernel-ab-s14-run2.txt
# end to end, this commit and 11677fc's kernel source in the order they ran
bench() { ponder bench runs/s14/moe --budgets 0.5,0.25 --repeats 7 --quiet --json $out/bench-moe-s14-$1.json; }
bench new
k=src/ponder/kernels/sparse_ffn.c
git checkout 11677fc -- $k; bench head; bench head2; git checkout HEAD -- $k
bench new2
