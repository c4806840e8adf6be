#!/usr/bin/env bash
# Dense numbers in BENCHMARKS.md: perplexity reference and lean decode vs transformers.generate, same process.
set -euo pipefail
out=${1:-benchmarks/results}
mkdir -p "$out"
ponder eval smollm2-135m --windows 20 --json "$out/eval-dense.json"
ponder bench smollm2-135m --repeats 7 --json "$out/bench-dense.json"
