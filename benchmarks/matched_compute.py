"""Perplexity of each model at the same FFN compute: linear interpolation between the two `ponder eval` results

Question: which model is better at the same FFN compute? Seconds (reads JSON only).
(JSON) of a model whose achieved compute brackets the target. Budgets hit compute only within ±0.02 on new text, so
two models evaluated at one budget differ in compute; this compares them at equal compute instead.

    python benchmarks/matched_compute.py --at 0.497,0.5,0.505 NAME=A.json,B.json [NAME=SWEEP.jsonl#METHOD ...]

A `ponder sweep` results file (JSON lines) contributes the rows of the method after `#`.
"""

from __future__ import annotations

import argparse
import json


def interpolate(points: list[tuple[float, float]], at: float) -> float | None:
    """Perplexity at compute `at` from (compute, perplexity) points sorted by compute; None outside them."""
    for (c0, p0), (c1, p1) in zip(points, points[1:], strict=False):
        if c0 <= at <= c1:
            return p0 + (p1 - p0) * (at - c0) / (c1 - c0)
    return None


def read(entry: str) -> list[dict]:
    path, _, method = entry.partition("#")
    with open(path) as f:
        if not method:
            return [json.load(f)]
        return [row for row in map(json.loads, f) if row["method"] == method]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--at", required=True, help="comma-separated FFN compute fractions")
    parser.add_argument("models", nargs="+", help="NAME=eval1.json,eval2.json")
    args = parser.parse_args()
    targets = [float(a) for a in args.at.split(",")]
    print(f"{'model':>24s} " + " ".join(f"{t:>9.3f}" for t in targets))
    for spec in args.models:
        name, files = spec.split("=", 1)
        results = [row for entry in files.split(",") for row in read(entry)]
        points = sorted((r["ffn_compute"], r["perplexity"]) for r in results)
        values = [interpolate(points, t) for t in targets]
        print(f"{name:>24s} " + " ".join("        -" if v is None else f"{v:9.2f}" for v in values))


if __name__ == "__main__":
    main()
