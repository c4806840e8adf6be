"""Same-process speed benchmark: every configuration timed against the dense lean path, interleaved.

Decode: batch 1, a `prompt_tokens` prompt, `new_tokens` greedy tokens with EOS ignored; tokens/s = new tokens /
wall time of the whole call (prompt included), the same definition for `transformers.generate` and the lean path.
Prefill: one forward of `prefill_tokens` tokens through the lean path. Each repeat runs every configuration once,
in the same order, after one warm-up round; we report the median and min-max over repeats. With `ceiling`, each
budget's decode is also run through the perfect width executor at the compute it spent (same prompt, same prefill).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from ponder.adaptive import adaptive_modules, get_budget, set_budget
from ponder.errors import PonderError
from ponder.inference.ceiling import ffn_paths, sliced_paths
from ponder.inference.decode import LeanDecoder
from ponder.inference.speculative import SpeculativeDecoder, bench_row
from ponder.state import method_name
from ponder.stats import ComputeMeter, decode_weight_bytes
from ponder.timing import Rate, cpu_name, paired_ratio, peak_rss_mb, prompt_ids, rate_row, run_interleaved


def _decode_through(decoder: LeanDecoder, paths: list, prompt: torch.Tensor, new_tokens: int) -> None:
    with ffn_paths(decoder, paths):
        decoder.generate(prompt, new_tokens)


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
    speculative: Callable[[LeanDecoder], SpeculativeDecoder] | None = None,
) -> dict:
    """Decode and prefill speed of the dense lean path, `transformers.generate` and each budget; with `ceiling`,
    also each budget's decode through the perfect width executor at the FFN compute that budget spent
    (`ponder.inference.ceiling`); with `speculative` (a speculative decoder over the lean one), its decode at the
    model's own budget, timed beside the others."""
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
    spec = None if speculative is None else speculative(decoder)
    if spec is not None:
        cases["speculative"] = at(1.0, lambda: spec.generate(prompt, new_tokens))
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
            | rate_row(rates(budget), ratios(budget))
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
        "dense": rate_row(dense, {})
        | {
            "speedup_vs_hf_generate": paired_ratio(seconds["hf_generate"], seconds["decode@1.0"]),
            "weight_bytes_per_token": weight_bytes,
            "bandwidth_gb_s": weight_bytes * dense["decode"].median / 1e9,
        },
        "budgets": rows,
        "peak_rss_mb": peak_rss_mb(),
    } | _speculative_row(spec, model, decoder, prompt, new_tokens, seconds, restore)


def _speculative_row(spec, model, decoder, prompt, new_tokens, seconds, restore) -> dict:
    """{"speculative": row} against the dense lean decode timed beside it, or {}."""
    if spec is None:
        return {}
    set_budget(model, 1.0)
    dense_tokens = decoder.generate(prompt, new_tokens)
    row = bench_row(spec, prompt, new_tokens, dense_tokens, seconds["decode@1.0"], seconds["speculative"])
    set_budget(model, restore)
    return {"speculative": row}
