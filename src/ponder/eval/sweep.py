"""Sweep methods x budgets: convert once per method, evaluate every budget, append one JSON record per point.

Resumable: converted models are kept under `DIR/models/`, and a point whose record is already in
`DIR/results.jsonl` is not run again (a line cut short by a kill is ignored and redone).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ponder.adaptive import ALLOCATIONS, convert, load, save_adaptive, set_budget, set_policy
from ponder.data import EVAL_DEFAULT, load_text
from ponder.errors import PonderError
from ponder.eval.perplexity import perplexity
from ponder.eval.tasks import TaskResult, check_task, evaluate_task
from ponder.inference.bench import benchmark
from ponder.methods import make_config, parse_options
from ponder.methods.moe.routing import check_policy

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


@dataclass(frozen=True)
class Variant:
    """One sweep entry: `NAME[+ALLOCATION][:KEY=VALUE...][@POLICY]`, e.g. `teal+greedy`, `moe:pseudo_experts=none`,
    `moe@top-p`. Entries that differ only in policy share one converted model (policies switch at run time)."""

    spec: str
    name: str
    allocation: str
    options: dict
    policy: str | None

    @property
    def model_dir(self) -> str:
        return self.spec.partition("@")[0].replace("/", "-")


def variant(spec: str) -> Variant:
    converted, _, policy = spec.partition("@")
    head, *pairs = converted.split(":")
    name, _, allocation = head.partition("+")
    options = parse_options(pairs)
    make_config(name, options)  # unknown method or bad options fail before any work
    if allocation and allocation not in ALLOCATIONS:
        raise PonderError(f"'{spec}': allocation '{allocation}' is unknown; use {' or '.join(ALLOCATIONS)}")
    if policy:
        check_policy(policy)
    return Variant(spec, name, allocation or "uniform", options, policy or None)


def _task_record(result: TaskResult) -> dict:
    """Task fields named so they do not collide with the perplexity record's when the two are merged."""
    fields = result.as_dict()
    fields["task_n"] = fields.pop("n")
    fields["task_ffn_compute"] = fields.pop("ffn_compute")
    return fields


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
    task: str | None = None,
    task_limit: int | None = None,
    bench: bool = False,
    bench_repeats: int = 5,
    dtype: str = "float32",
    threads: int | None = None,
    progress: bool = True,
    kv=None,
) -> list[dict]:
    """Evaluate (and optionally score a task and time) every method at every budget; returns all records.
    With `kv` (a `ponder.kvcache.KVConfig`) perplexity is scored through that compressed cache
    (`ponder.kvcache.longctx`), and each record carries the KV settings."""
    for method in methods:
        variant(method)  # unknown names fail before any work
    if task is not None:
        check_task(task)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    text = load_text(data)
    records = read_records(directory)

    def measure(model, tokenizer, method: str, budget: float) -> None:
        """Every quality record of one point that is not on disk yet."""
        point = {"method": method, "budget": budget}
        if not _done(records, method, budget, "perplexity"):
            if kv is None:
                result = perplexity(model, tokenizer, text, windows=windows, window_len=window_len, progress=progress)
                settings = {}
            else:
                from ponder.kvcache.longctx import kv_perplexity

                result = kv_perplexity(model, tokenizer, text, kv, windows=windows, window_len=window_len,
                                       progress=progress)  # fmt: skip
                settings = {"kv_budget": kv.budget, "kv_policy": kv.policy, "kv_bits": kv.bits}
            _append(directory, records, {**point, **result.as_dict(), **settings, "model": model_name, "data": data})
        if task is not None and not _done(records, method, budget, "acc"):
            result = evaluate_task(model, tokenizer, task, limit=task_limit, progress=progress)
            _append(directory, records, {**point, **_task_record(result)})

    if not all(_done(records, "dense", 1.0, key) for key in ["perplexity"] + (["acc"] if task else [])):
        measure(*load(model_name, dtype=dtype, threads=threads), "dense", 1.0)
    for method in methods:
        spec = variant(method)
        converted = directory / "models" / spec.model_dir
        if not converted.exists():
            model, tokenizer = load(model_name, dtype=dtype, threads=threads)
            convert(
                model,
                tokenizer,
                spec.name,
                config=make_config(spec.name, spec.options),
                calibration_tokens=calibration_tokens,
                allocation=spec.allocation,
                work_dir=directory / "models" / f".{spec.model_dir}.partial",
                resume=True,  # a sweep killed mid-conversion continues where it stopped
                progress=progress,
            )
            save_adaptive(model, converted, base_model=model_name)
            shutil.rmtree(directory / "models" / f".{spec.model_dir}.partial", ignore_errors=True)
        model, tokenizer = load(str(converted), dtype=dtype, threads=threads)
        if spec.policy:
            set_policy(model, spec.policy)
        usable = []
        for budget in budgets:
            try:
                set_budget(model, budget)
            except PonderError as e:
                if not _done(records, method, budget, "skipped"):
                    _append(directory, records, {"method": method, "budget": budget, "skipped": str(e)})
                continue
            usable.append(budget)
            measure(model, tokenizer, method, budget)
        timed = [b for b in usable if b < 1.0 and not _done(records, method, b, "decode_speedup")]
        if bench and timed:
            speed = benchmark(model, tokenizer, budgets=timed, repeats=bench_repeats, progress=progress)
            for row in speed["budgets"]:
                _append(
                    directory, records, {"method": method, **row, "dense_decode_tok_s": speed["dense"]["decode_tok_s"]}
                )
    return records


def _append(directory: Path, records: list[dict], record: dict) -> None:
    append_record(directory, record)
    records.append(record)


def merged(records: list[dict]) -> list[dict]:
    """One row per (method, budget): quality and speed records of the same point joined."""
    rows: dict[tuple[str, float], dict] = {}
    for record in records:
        rows.setdefault((record["method"], record["budget"]), {}).update(record)
    return sorted(rows.values(), key=lambda r: (r["method"] != "dense", r["method"], -r["budget"]))
