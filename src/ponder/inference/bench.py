"""Same-process speed benchmark: every configuration timed against the dense lean path, interleaved.

Decode: batch 1, a `prompt_tokens` prompt, `new_tokens` greedy tokens with EOS ignored; tokens/s = new tokens /
wall time of the whole call (prompt included), the same definition for `transformers.generate` and the lean path.
Prefill: one forward of `prefill_tokens` tokens through the lean path. Each repeat runs every configuration once,
in the same order, after one warm-up round; we report the median and min-max over repeats. With `ceiling`, each
budget's decode is also run through the perfect width executor at the compute it spent (same prompt, same prefill).
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from ponder.adaptive import adaptive_modules, get_budget, set_budget
from ponder.data import CALIB_DEFAULT, load_text
from ponder.errors import PonderError
from ponder.inference.ceiling import ffn_paths, sliced_paths
from ponder.inference.decode import LeanDecoder
from ponder.state import method_name
from ponder.stats import ComputeMeter, decode_weight_bytes


@dataclass
class Rate:
    """Tokens per second over repeats: median and range."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, tokens: int, seconds: list[float]) -> Rate:
        rates = [tokens / s for s in seconds]
        return cls(statistics.median(rates), min(rates), max(rates))


def prompt_ids(tokenizer: PreTrainedTokenizerBase, length: int) -> torch.Tensor:
    """`length` tokens of calibration text (never evaluation text) as a [1, length] prompt."""
    ids = tokenizer(load_text(CALIB_DEFAULT)[: length * 16], add_special_tokens=False).input_ids
    if len(ids) < length:
        raise PonderError(f"prompt of {length} tokens is longer than the bundled text allows; use fewer tokens")
    return torch.tensor([ids[:length]])


def cpu_name() -> str:
    """The processor's model name where the OS tells it (Linux: /proc/cpuinfo), else its architecture: ratios from
    different runs are only comparable on the same kind of CPU."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_interleaved(cases: dict[str, Callable[[], object]], repeats: int, progress: bool) -> dict[str, list[float]]:
    """Seconds per call of each case: one warm-up round, then `repeats` rounds of every case in turn."""
    for fn in cases.values():
        fn()
    seconds: dict[str, list[float]] = {name: [] for name in cases}
    for _ in tqdm(range(repeats), desc="bench", unit="round", disable=not progress):
        for name, fn in cases.items():
            seconds[name].append(_timed(fn))
    return seconds


def _row(rates: dict[str, Rate], ratios: dict[str, float]) -> dict:
    row = {}
    for kind, rate in rates.items():
        row.update({f"{kind}_tok_s": rate.median, f"{kind}_tok_s_min": rate.low, f"{kind}_tok_s_max": rate.high})
    return row | {f"{kind}_speedup": ratio for kind, ratio in ratios.items()}


def _decode_through(decoder: LeanDecoder, paths: list, prompt: torch.Tensor, new_tokens: int) -> None:
    with ffn_paths(decoder, paths):
        decoder.generate(prompt, new_tokens)


def paired_ratio(reference: list[float], candidate: list[float]) -> float:
    """Median over rounds of reference time / candidate time (pairs measured back to back)."""
    return statistics.median(r / c for r, c in zip(reference, candidate, strict=True))


@torch.inference_mode()
def benchmark(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    budgets: list[float] | None = None,
    prompt_tokens: int = 64,
    new_tokens: int = 128,
    prefill_tokens: int = 512,
    repeats: int = 5,
    progress: bool = True,
    ceiling: bool = False,
) -> dict:
    """Decode and prefill speed of the dense lean path, `transformers.generate` and each budget; with `ceiling`,
    also each budget's decode through the perfect width executor at the FFN compute that budget spent
    (`ponder.inference.ceiling`)."""
    if repeats < 1:
        raise PonderError(f"repeats must be >= 1, got {repeats}")
    budgets = list(budgets or [])
    if budgets and not adaptive_modules(model):
        raise PonderError("this model has no adaptive modules, so --budgets does not apply: convert it first")
    restore = get_budget(model)
    prompt = prompt_ids(tokenizer, prompt_tokens)
    prefill = prompt_ids(tokenizer, prefill_tokens)
    decoder = LeanDecoder(model, max_len=max(prompt_tokens + new_tokens, prefill_tokens))
    # eos_token_id=[]: generate() neither stops at nor suppresses EOS, the same greedy tokens the lean path makes.
    hf_config = GenerationConfig(
        max_new_tokens=new_tokens, do_sample=False, eos_token_id=[], pad_token_id=tokenizer.eos_token_id
    )

    def at(budget: float, fn: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            set_budget(model, budget)
            return fn()

        return run

    def lean_prefill() -> None:
        decoder.runner.reset(1)
        decoder.runner.forward(prefill)

    set_budget(model, 1.0)
    hf_tokens = model.generate(prompt, generation_config=hf_config)
    lean_tokens = decoder.generate(prompt, new_tokens)
    cases = {"hf_generate": at(1.0, lambda: model.generate(prompt, generation_config=hf_config))}
    compute = {}
    for budget in [1.0, *budgets]:
        cases[f"decode@{budget}"] = at(budget, lambda: decoder.generate(prompt, new_tokens))
        cases[f"prefill@{budget}"] = at(budget, lean_prefill)
        set_budget(model, budget)
        with ComputeMeter(model) as meter:
            decoder.generate(prompt, new_tokens)
        compute[budget] = meter.report
        paths = sliced_paths(decoder, meter.report.ffn_compute) if ceiling and budget != 1.0 else None
        if paths is not None:
            cases[f"ceiling@{budget}"] = at(budget, partial(_decode_through, decoder, paths, prompt, new_tokens))
    seconds = run_interleaved(cases, repeats, progress)
    set_budget(model, restore)

    def rates(budget: float) -> dict[str, Rate]:
        return {
            "decode": Rate.of(new_tokens, seconds[f"decode@{budget}"]),
            "prefill": Rate.of(prefill_tokens, seconds[f"prefill@{budget}"]),
        }

    def ratios(budget: float) -> dict[str, float]:
        return {
            kind: paired_ratio(seconds[f"{kind}@1.0"], seconds[f"{kind}@{budget}"]) for kind in ("decode", "prefill")
        }

    hf = Rate.of(new_tokens, seconds["hf_generate"])
    dense = rates(1.0)
    screen = getattr(decoder.runner, "greedy_head", None)
    head_bytes = None if screen is None else screen.bytes_read()
    weight_bytes = decode_weight_bytes(model, head_bytes=head_bytes)
    rows = []
    for budget in budgets:
        report = compute[budget]
        row_bytes = decode_weight_bytes(model, report.ffn_bytes, head_bytes=head_bytes)
        bound = seconds.get(f"ceiling@{budget}")
        rows.append(
            {"budget": budget, "ffn_compute": report.ffn_compute, "ffn_bytes": report.ffn_bytes}
            | _row(rates(budget), ratios(budget))
            | {"weight_bytes_per_token": row_bytes, "bandwidth_gb_s": row_bytes * rates(budget)["decode"].median / 1e9}
            | ({"ceiling_decode_speedup": paired_ratio(seconds["decode@1.0"], bound)} if bound else {})
        )
    return {
        "model": getattr(model.config, "_name_or_path", model.config.model_type),
        "method": method_name(model),
        "dtype": str(model.dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "cpu": cpu_name(),
        "prompt_tokens": prompt_tokens,
        "new_tokens": new_tokens,
        "prefill_tokens": prefill_tokens,
        "repeats": repeats,
        "lean_path": "native" if decoder.native else "generic",
        "greedy_head": "fp32" if screen is None else "int8-screened",  # the same tokens either way
        "tokens_match_hf": bool(torch.equal(hf_tokens, lean_tokens)),
        "hf_generate": {"decode_tok_s": hf.median, "decode_tok_s_min": hf.low, "decode_tok_s_max": hf.high},
        "dense": _row(dense, {})
        | {
            "speedup_vs_hf_generate": paired_ratio(seconds["hf_generate"], seconds["decode@1.0"]),
            "weight_bytes_per_token": weight_bytes,
            "bandwidth_gb_s": weight_bytes * dense["decode"].median / 1e9,
        },
        "budgets": rows,
    }
