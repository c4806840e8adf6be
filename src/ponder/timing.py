"""How ponder times things: interleaved rounds after a warm-up, medians and ranges, paired ratios, the prompt.

Shared by the fp32 benchmark (`ponder.inference.bench`) and the quantized runtime's (`ponder.quant.bench`), kept
free of model code so that a quantized run does not import it.
"""

from __future__ import annotations

import platform
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from ponder.data import CALIB_DEFAULT, load_text
from ponder.errors import PonderError


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


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (Linux and BSD report kB; macOS bytes, which this ignores)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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


def rate_row(rates: dict[str, Rate], ratios: dict[str, float]) -> dict:
    row = {}
    for kind, rate in rates.items():
        row.update({f"{kind}_tok_s": rate.median, f"{kind}_tok_s_min": rate.low, f"{kind}_tok_s_max": rate.high})
    return row | {f"{kind}_speedup": ratio for kind, ratio in ratios.items()}


def paired_ratio(reference: list[float], candidate: list[float]) -> float:
    """Median over rounds of reference time / candidate time (pairs measured back to back)."""
    return statistics.median(r / c for r, c in zip(reference, candidate, strict=True))
