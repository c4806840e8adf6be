#!/usr/bin/env bash
# Session 21 (AMD EPYC, Zen 4): the greedy step's head screened through an int8 copy (exact argmax, a quarter of the
# head's reads), and FFN work counted outside nn.Module attributes. Raw outputs in benchmarks/results/*-s21*.
# Needs runs/s20/moe-router (benchmarks/session20.sh); makes runs/s21/teal.
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
