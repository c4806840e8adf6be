#!/usr/bin/env bash
# Session 12: the dense baseline read its weights memory-mapped from the safetensors file until 73c7496. Every
# number in BENCHMARKS.md "Session 12" comes from these commands, run after that commit; raw outputs in
# benchmarks/results/. Models: runs/s11/teal (benchmarks/session11.sh) and runs/s10/moe-tuned-mid2
# (benchmarks/session10.sh).
set -euo pipefail
out=benchmarks/results
quiet() { grep -v "Loading weights"; }
python benchmarks/mmap_ab.py --repeats 10 2>&1 | quiet > $out/mmap-ab-s12.txt
python benchmarks/decode_breakdown.py --repeats 7 2>&1 | quiet > $out/decode-breakdown-s12.txt
python benchmarks/ffn_modules.py runs/s11/teal runs/s10/moe-tuned-mid2 --budgets 0.75,0.5,0.25 --repeats 20 \
  --tokens 64 2>&1 | quiet > $out/ffn-modules-s12.txt
ponder bench runs/s11/teal --budgets 0.75,0.5,0.25 --repeats 15 --quiet --json $out/bench-teal-s12.json
ponder bench runs/s10/moe-tuned-mid2 --budgets 0.75,0.5,0.25 --repeats 7 --quiet --json $out/bench-moe-tuned-mid2-s12.json
python benchmarks/moe_prefill.py runs/s10/moe-tuned-mid2 --repeats 7 2>&1 | quiet > $out/moe-prefill-s12.txt
# teal's kernel by phase, and with its neurons reordered by how often they are kept
python benchmarks/teal_phases.py runs/s11/teal --repeats 15 2>&1 | quiet > $out/teal-phases-s12.txt
# would 2 MB pages help? dense and teal kernels on copies advised MADV_HUGEPAGE
python benchmarks/hugepages_ab.py runs/s11/teal --repeats 12 2>&1 | quiet > $out/hugepages-ab-s12.txt
