#!/usr/bin/env bash
# Session-6 numbers in BENCHMARKS.md: layer skip (`skip`) with the default affine stand-in and with none, its
# decode/prefill speed against the dense lean path, where its compute goes, and a static layer-drop baseline.
# Run it alone on the machine (about an hour here).
# Usage: bash benchmarks/session6.sh [RUNS_DIR]
set -euo pipefail
runs=${1:-runs}
out=benchmarks/results
/usr/bin/time -v ponder convert smollm2-135m --method skip -o "$runs/smol-skip" --overwrite --quiet \
    2> >(grep -E "Elapsed|Maximum resident" > "$out/convert-skip-s6.txt")
ponder sweep smollm2-135m --methods skip,skip:stand_in=none --budgets 0.9,0.75,0.5 --task piqa --task-limit 500 \
    -o "$runs/sweep-s6"
cp "$runs/sweep-s6/results.jsonl" "$out/sweep-s6-results.jsonl"
ponder bench "$runs/smol-skip" --budgets 0.9,0.75,0.5 --repeats 5 --json "$out/bench-skip-s6.json"
ponder inspect "$runs/smol-skip" --budget 0.5 --json "$out/inspect-skip-0.5-s6.json"
python benchmarks/layer_drop.py --compute 0.9,0.75,0.5 | tee "$out/layer-drop-s6.txt"
