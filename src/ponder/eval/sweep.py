"""Sweep methods x budgets: convert once per method, evaluate every budget, append one JSON record per point.

Resumable: converted models are kept under `DIR/models/`, and a point whose record is already in
`DIR/results.jsonl` is not run again (a line cut short by a kill is ignored and redone).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ponder.adaptive import convert, load, save_adaptive, set_budget
from ponder.data import EVAL_DEFAULT, load_text
from ponder.errors import PonderError
from ponder.eval.perplexity import perplexity
from ponder.inference.bench import benchmark
from ponder.methods import get_method

RESULTS = "results.jsonl"


def read_records(directory: Path) -> list[dict]:
    path = directory / RESULTS
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a kill: the point is simply run again
    return records


def append_record(directory: Path, record: dict) -> None:
    """Append one whole line and flush it to disk before the next point starts."""
    path = directory / RESULTS
    torn = path.exists() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
    with path.open("a") as f:
        f.write(("\n" if torn else "") + json.dumps(record) + "\n")  # never glue a record to a torn line
        f.flush()
        os.fsync(f.fileno())


def _done(records: list[dict], method: str, budget: float, key: str) -> bool:
    return any(r["method"] == method and r["budget"] == budget and key in r for r in records)


def sweep(
    model_name: str,
    methods: list[str],
    budgets: list[float],
    directory: str | Path,
    *,
    windows: int = 20,
    window_len: int = 1024,
    data: str = EVAL_DEFAULT,
    calibration_tokens: int = 8192,
    bench: bool = False,
    bench_repeats: int = 5,
    progress: bool = True,
) -> list[dict]:
    """Evaluate (and optionally time) every method at every budget; returns all records."""
    for method in methods:
        get_method(method)  # unknown names fail before any work
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    text = load_text(data)
    records = read_records(directory)
    if not _done(records, "dense", 1.0, "perplexity"):
        model, tokenizer = load(model_name)
        result = perplexity(model, tokenizer, text, windows=windows, window_len=window_len, progress=progress)
        record = {"method": "dense", "budget": 1.0, **result.as_dict(), "model": model_name, "data": data}
        append_record(directory, record)
        records.append(record)
    for method in methods:
        converted = directory / "models" / method
        if not converted.exists():
            model, tokenizer = load(model_name)
            convert(model, tokenizer, method, calibration_tokens=calibration_tokens, progress=progress)
            save_adaptive(model, converted, base_model=model_name)
        model, tokenizer = load(str(converted))
        usable = []
        for budget in budgets:
            try:
                set_budget(model, budget)
            except PonderError as e:
                if not _done(records, method, budget, "skipped"):
                    record = {"method": method, "budget": budget, "skipped": str(e)}
                    append_record(directory, record)
                    records.append(record)
                continue
            usable.append(budget)
            if _done(records, method, budget, "perplexity"):
                continue
            result = perplexity(model, tokenizer, text, windows=windows, window_len=window_len, progress=progress)
            record = {"method": method, "budget": budget, **result.as_dict(), "model": model_name, "data": data}
            append_record(directory, record)
            records.append(record)
        timed = [b for b in usable if b < 1.0 and not _done(records, method, b, "decode_speedup")]
        if bench and timed:
            speed = benchmark(model, tokenizer, budgets=timed, repeats=bench_repeats, progress=progress)
            for row in speed["budgets"]:
                record = {"method": method, **row, "dense_decode_tok_s": speed["dense"]["decode_tok_s"]}
                append_record(directory, record)
                records.append(record)
    return records


def merged(records: list[dict]) -> list[dict]:
    """One row per (method, budget): quality and speed records of the same point joined."""
    rows: dict[tuple[str, float], dict] = {}
    for record in records:
        rows.setdefault((record["method"], record["budget"]), {}).update(record)
    return sorted(rows.values(), key=lambda r: (r["method"] != "dense", r["method"], -r["budget"]))
