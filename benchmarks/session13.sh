# Session 13: teal's down phase reads eight stretches of the kept list at once; FFN modules and decode re-measured.
#   bash benchmarks/session13.sh   (from the repository root, with runs/s11/teal converted as in session11.sh)
set -euo pipefail
out=benchmarks/results
quiet() { grep -v "Loading weights"; }
python benchmarks/teal_kernel_ab.py runs/s11/teal --rev d6ab932~1 --repeats 15 2>&1 | quiet > $out/teal-kernel-s13.txt
python benchmarks/ffn_modules.py runs/s11/teal --budgets 0.75,0.5,0.25 --repeats 20 --tokens 64 2>&1 | quiet \
  > $out/ffn-modules-s13.txt
ponder bench runs/s11/teal --budgets 0.75,0.5,0.25 --repeats 15 --quiet --json $out/bench-teal-s13.json
