"""The `ponder` command: a table from command names to thin handlers over library functions.

Options shared by several commands are defined once, each by one `_add_*` function (functions rather than argparse
parent parsers: a parent's actions are shared objects, so one command's default would become every command's).
Every value is parsed and checked once, by its option's type, which wraps the library's own check, so a bad value
fails before any model loads, as a one-line error (exit 2) like every other ponder error.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ponder.errors import PonderError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors, like every other ponder error."""

    def error(self, message: str) -> None:
        raise PonderError(f"{message} (see `{self.prog} --help`)")


# --- values: each option's type parses and checks it once ------------------------------------------------------


@contextmanager
def _argument_error() -> Iterator[None]:
    """A library check's PonderError as argparse's error for the option being parsed."""
    try:
        yield
    except PonderError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def budget(text: str) -> float:
    """A budget, the target fraction of dense FFN compute, checked by the library's one rule (0 < b <= 1)."""
    from ponder.methods.base import check_budget

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"budget '{text}' is not a number: give a fraction in (0, 1]") from None
    with _argument_error():
        return check_budget(value)


@dataclass(frozen=True)
class AutoBudget:
    """`--budget auto:B`: each token's budget from the previous prediction's entropy, B on average."""

    mean: float


def budget_or_auto(text: str) -> float | AutoBudget:
    """A budget, or auto:B (B checked as a budget)."""
    if text.strip() == "auto":
        raise argparse.ArgumentTypeError("give auto its mean budget, e.g. auto:0.5")
    if text.startswith("auto:"):
        return AutoBudget(budget(text[len("auto:") :]))
    return budget(text)


def budget_list(text: str) -> list[float]:
    """Comma-separated budgets, e.g. 0.75,0.5, each checked as `budget`."""
    values = [budget(part) for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"'{text}' has no budgets: give comma-separated fractions, e.g. 0.75,0.5")
    return values


def _number(text: str, kind: type[int] | type[float], what: str) -> int | float:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not {what}") from None


def positive(text: str) -> int:
    value = _number(text, int, "an integer")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def port(text: str) -> int:
    value = _number(text, int, "a port number")
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"port must lie in 1..65535, got {value}")
    return value


def seconds(text: str) -> float:
    value = _number(text, float, "a number of seconds")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {value}")
    return value


def dtype_name(text: str) -> str:
    from ponder.models.load import parse_dtype

    with _argument_error():
        parse_dtype(text)
    return text


def policy_name(text: str) -> str:
    from ponder.methods.moe.routing import check_policy

    with _argument_error():
        return check_policy(text)


def kv_budget(text: str) -> float | int:
    from ponder.kvcache import parse_kv_budget

    with _argument_error():
        return parse_kv_budget(text)


def task_name(text: str) -> str:
    from ponder.eval.tasks import check_task

    with _argument_error():
        return check_task(text)


# --- options shared by several commands, each defined once ----------------------------------------------------

BUDGET_HELP = "target fraction of dense FFN compute, (0, 1]"


def _add_model(parser: argparse.ArgumentParser, *, positional: bool = True) -> None:
    """What to load and how: the model (an argument, or `--model` where a default exists), dtype, threads, bars."""
    from ponder.models.load import DEFAULT_MODEL

    group = parser.add_argument_group("model loading")
    if positional:
        group.add_argument(
            "model", help="alias (smollm2-135m), HF model directory, .gguf file, or converted directory"
        )
    else:
        group.add_argument("--model", default=DEFAULT_MODEL, help=f"model to run on (default {DEFAULT_MODEL})")
    _add_loading(group)


WEIGHTS = ("fp32", "q8_0", "q4_0", "q4_1")
QUANT_ACTIVATIONS = ("int8", "fp32")
QUANTIZED_COMMANDS = ("eval", "generate", "bench", "serve", "quantize")
"""Commands that run the quantized runtime; the others work on fp32 modules."""


def _add_loading(group: argparse._ActionsContainer) -> None:
    group.add_argument("--dtype", type=dtype_name, default="float32", help="float32 (default), bfloat16 or float16")
    group.add_argument(
        "--weights",
        choices=WEIGHTS,
        default=None,
        help="weight format: fp32 modules (default), or GGUF blocks run natively (q8_0, q4_0, q4_1; "
        f"{', '.join(QUANTIZED_COMMANDS[:-1])} and quantize); a quantized directory runs in its own format",
    )
    group.add_argument(
        "--activations",
        choices=QUANT_ACTIVATIONS,
        default=None,
        help="matvec inputs of the quantized runtime: int8 blocks (default; faster, as llama.cpp does) or fp32 "
        "(no activation rounding: the fp32 path's tokens, about half the decode speed)",
    )
    group.add_argument("--threads", type=positive, default=None, help="torch intra-op threads (default: torch's)")
    group.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_budget(
    parser: argparse.ArgumentParser, *, default: float | None = None, help: str = BUDGET_HELP, auto: bool = False
) -> None:
    if auto:
        help += (
            ", or auto:B (each token's budget from the entropy of the prediction before it, B on average; "
            "calibrated once on wikitext2-valid, then cached)"
        )
    parser.add_argument("--budget", type=budget_or_auto if auto else budget, default=default, help=help)


def _add_budgets(parser: argparse.ArgumentParser, *, default: list[float] | None = None) -> None:
    parser.add_argument("--budgets", type=budget_list, default=default, help="comma-separated budgets, e.g. 0.75,0.5")


def _add_policy(parser: argparse.ArgumentParser) -> None:
    from ponder.methods.moe.routing import POLICIES

    parser.add_argument(
        "--policy", type=policy_name, default=None, help="routing policy of a routed model: " + ", ".join(POLICIES)
    )


def _add_kv(parser: argparse.ArgumentParser) -> None:
    """The KV cache's budget, policy and precision (`ponder.kvcache`); any of them runs the compressed cache."""
    from ponder.kvcache import BITS, POLICIES

    group = parser.add_argument_group("KV cache")
    group.add_argument(
        "--kv-budget",
        type=kv_budget,
        default=None,
        help="KV entries kept per layer: a fraction of the tokens seen (0, 1] or a token count (default 1: all)",
    )
    group.add_argument(
        "--kv-policy",
        choices=POLICIES,
        default=None,
        help="which entries stay: " + ", ".join(POLICIES) + " (default window)",
    )
    group.add_argument(
        "--kv-bits", type=int, choices=BITS, default=None, help="KV precision: 16 (default), or KIVI-style 8 or 4"
    )


def _add_speculative(parser: argparse.ArgumentParser) -> None:
    """Speculative decoding (`ponder.inference.speculative`): the model's own greedy tokens, drafted cheaply."""
    group = parser.add_argument_group("speculative decoding")
    group.add_argument(
        "--speculative",
        action="store_true",
        help="draft tokens cheaply and verify them in one pass of the model: the same greedy tokens, faster when "
        "drafts are kept",
    )
    group.add_argument(
        "--draft",
        default=None,
        metavar="DRAFT",
        help="where drafts come from: lookup (n-gram matches in the prompt and the text so far; the default) or "
        "layers:FIRST-LAST / layers:I,J,... (the quantized model through those layers)",
    )
    group.add_argument(
        "--draft-tokens",
        type=positive,
        default=None,
        metavar="K",
        help="verify K drafts a pass (default: up to 8, as many as the measured acceptance and pass times pay for)",
    )


def _speculative(args: argparse.Namespace) -> bool:
    """Whether --speculative is on; its options without it are refused."""
    if not getattr(args, "speculative", False):
        for option in ("draft", "draft_tokens"):
            if getattr(args, option, None) is not None:
                raise PonderError(f"--{option.replace('_', '-')} sets up speculative decoding: add --speculative")
        return False
    if _kv_config(args) is not None:
        raise PonderError("--speculative runs the lean cache, not the --kv-* one: drop one of them")
    for option in ("hold_budget", "show_compute", "ceiling"):
        if getattr(args, option, False):
            raise PonderError(f"--{option.replace('_', '-')} does not combine with --speculative: drop one of them")
    return True


def _speculative_factory(args: argparse.Namespace):
    """decoder -> SpeculativeDecoder as the options ask."""
    from ponder.inference.speculative import speculative_decoder

    return lambda decoder: speculative_decoder(decoder, args.draft or "lookup", args.draft_tokens)


def _kv_config(args: argparse.Namespace):
    """The KVConfig the --kv-* options ask for, or None when none is given (or the command has none)."""
    from ponder.kvcache import KVConfig

    kv_budget, kv_policy, kv_bits = (getattr(args, name, None) for name in ("kv_budget", "kv_policy", "kv_bits"))
    if kv_budget is None and kv_policy is None and kv_bits is None:
        return None
    budget = 1.0 if kv_budget is None else kv_budget
    return KVConfig(budget=budget, policy=kv_policy or "window", bits=kv_bits or 16)


def _add_text(parser: argparse.ArgumentParser, *, tokens: int | None = None, name: str = "--data") -> None:
    """The text to read (a bundled name or a file), and with `tokens` how many of its first tokens."""
    parser.add_argument(name, default="wikitext2", help="bundled name (wikitext2, wikitext2-valid) or .txt/.jsonl")
    if tokens is not None:
        parser.add_argument(
            "--tokens", type=positive, default=tokens, help=f"first tokens of the text (default {tokens})"
        )


def _add_windows(parser: argparse.ArgumentParser, *, default: int) -> None:
    parser.add_argument(
        "--windows", type=positive, default=default, help=f"windows scored for perplexity (default {default})"
    )


def _add_repeats(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeats", type=positive, default=5, help="timed rounds per configuration (default 5)")


def _add_calibration_tokens(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--calib-tokens", type=positive, default=8192, help="calibration tokens (default 8192)")


def _add_allocation(parser: argparse.ArgumentParser, *, help: str) -> None:
    parser.add_argument("--allocation", choices=("uniform", "greedy"), default="uniform", help=help)


def _add_output(parser: argparse.ArgumentParser, *, help: str, overwrite: bool = True) -> None:
    parser.add_argument("-o", "--output", type=Path, required=True, help=help)
    if overwrite:
        parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")


def _add_json(parser: argparse.ArgumentParser, *, what: str = "the result") -> None:
    parser.add_argument("--json", type=Path, default=None, help=f"write {what} to this JSON file")


# --- what handlers share: loading, run-time knobs, output ------------------------------------------------------


def _show_progress(quiet: bool) -> None:
    """transformers' own bars (e.g. loading weights) follow --quiet, as ponder's bars do through `progress=`."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    (hf_logging.disable_progress_bar if quiet else hf_logging.enable_progress_bar)()


def _quantized(args: argparse.Namespace) -> bool:
    """Whether this run goes through the quantized runtime: --weights names a block format, or the model is a
    `ponder quantize` directory. Combinations it cannot run fail here, before anything loads."""
    from ponder.quant.weights import is_quantized_dir
    from ponder.state import CONFIG_FILE

    model = Path(getattr(args, "model", "") or "")
    stored = model.is_dir() and is_quantized_dir(model)
    if args.weights in (None, "fp32") and not stored:
        if getattr(args, "activations", None) is not None:
            raise PonderError("--activations applies to quantized weights: add --weights q8_0, q4_0 or q4_1")
        return False
    if stored and args.weights == "fp32":
        raise PonderError(f"{model} holds quantized blocks: drop --weights fp32, or run the original model")
    if model.is_dir() and (model / CONFIG_FILE).exists():
        from ponder.quant.adaptive import read_converted

        read_converted(model)  # a method the runtime lacks is refused here, naming the ones it runs
    if args.dtype not in ("float32", "fp32"):
        raise PonderError(f"--dtype {args.dtype} applies to fp32 weights: drop it, or drop --weights")
    if args.command not in QUANTIZED_COMMANDS:
        raise PonderError(
            f"`ponder {args.command}` works on fp32 modules; quantized weights run in "
            f"{', '.join(QUANTIZED_COMMANDS)}: drop --weights or use a fp32 model"
        )
    return True


def _load(args: argparse.Namespace, name: str | None = None):
    """The model (or `name`) as --dtype and --threads ask; budgets and policies are applied by the caller."""
    from ponder.adaptive import load

    if name is None and _quantized(args):  # a command that runs quantized weights has checked this before
        raise AssertionError("quantized weights reached the fp32 loader")
    return load(name or args.model, dtype=args.dtype, threads=args.threads)


def _load_quantized(args: argparse.Namespace, *, max_len: int):
    """The quantized runtime for the model as --weights asks (its own format for a quantized directory), and the
    model's tokenizer."""
    from ponder.quant import QuantDecoder

    tokenizer = _quantized_tokenizer(args)  # first: a bad reference fails before the weights are read
    weights = None if args.weights in (None, "fp32") else args.weights
    activations = args.activations or "int8"
    if _adaptive_dir(args):
        from ponder.quant.adaptive import AdaptiveQuantDecoder

        budget = getattr(args, "budget", None)
        decoder = AdaptiveQuantDecoder(args.model, weights=weights, budget=budget, activations=activations,
                                       threads=args.threads, max_len=max_len)  # fmt: skip
    else:
        decoder = QuantDecoder(
            args.model, weights=weights, activations=activations, threads=args.threads, max_len=max_len
        )
    if not args.quiet:
        for note in decoder.model.notes:
            print(f"note: {note}", file=sys.stderr)
    return decoder, tokenizer


def _adaptive_dir(args: argparse.Namespace) -> bool:
    from ponder.state import CONFIG_FILE

    return (Path(args.model) / CONFIG_FILE).is_file()


def _quantized_tokenizer(args: argparse.Namespace):
    """The tokenizer of the model, or of a converted directory's base model."""
    from ponder.models.load import load_tokenizer

    if _adaptive_dir(args):
        from ponder.quant.adaptive import read_converted

        return load_tokenizer(read_converted(args.model)[0]["base_model"])
    return load_tokenizer(args.model)


def _no_knobs(args: argparse.Namespace) -> None:
    """Budgets need an adaptive model (the quantized runtime runs a converted directory's method); policies need
    routed methods, which it does not run; holding a budget runs on fp32 modules."""
    adaptive = _adaptive_dir(args)
    for option in ("policy", "hold_budget") if adaptive else ("budget", "budgets", "policy", "hold_budget"):
        value = getattr(args, option, None)
        if value is not None and value is not False and value not in (1.0, [1.0]):
            name = option.replace("_", "-")
            raise PonderError(f"--{name} needs an adaptive model of a method the quantized runtime runs")
    if _kv_config(args) is not None:
        raise PonderError("the --kv-* options run the transformers cache, on fp32 modules: drop --weights")


def _auto_budget(args: argparse.Namespace) -> AutoBudget | None:
    """--budget auto:B, checked against the options it does not combine with; None for a plain budget."""
    if not isinstance(getattr(args, "budget", None), AutoBudget):
        return None
    if _quantized(args):
        raise PonderError("--budget auto runs on fp32 modules: drop --weights")
    if _kv_config(args) is not None:
        raise PonderError("--budget auto scores through the lean cache, not the --kv-* one: drop one of them")
    for option in ("task", "hold_budget", "speculative", "policy"):
        if getattr(args, option, None) not in (None, False):
            raise PonderError(f"--{option.replace('_', '-')} does not combine with --budget auto: drop one of them")
    return args.budget


def _entropy_policy(model, tokenizer, auto: AutoBudget, *, quiet: bool):
    """The entropy bins and budgets for auto:B, calibrated on wikitext2-valid (once: then read from the cache)."""
    from ponder.data import CALIB_DEFAULT, load_text
    from ponder.entropy_budget import cached_calibration

    return cached_calibration(model, tokenizer, load_text(CALIB_DEFAULT), auto.mean, progress=not quiet)


def _apply_knobs(model, args: argparse.Namespace) -> None:
    """--budget and --policy of a command that runs a model as it is (not one that converts it first)."""
    from ponder.adaptive import set_budget, set_policy

    if isinstance(args.budget, AutoBudget):
        set_budget(model, args.budget.mean)
    elif args.budget is not None:
        set_budget(model, args.budget)
    if getattr(args, "policy", None) is not None:
        set_policy(model, args.policy)


def _method(model) -> str:
    from ponder.state import method_name

    return method_name(model)


def _emit(args: argparse.Namespace, result: dict, render: Callable[[dict], None]) -> None:
    from ponder.io import write_json_atomic

    if args.json:
        write_json_atomic(args.json, result)
    render(result)


def _check_output(args: argparse.Namespace) -> None:
    if args.output.exists() and not args.overwrite:
        raise PonderError(f"output '{args.output}' exists: pass --overwrite or choose another -o")


def cmd_eval(args: argparse.Namespace) -> None:
    from ponder.data import load_text

    auto = _auto_budget(args)
    quantized = _quantized(args)
    if args.task:
        if quantized:
            raise PonderError("--task runs on fp32 modules: drop --weights")
        if _kv_config(args) is not None:
            raise PonderError("--kv-* score perplexity through the KV cache; --task scores whole sequences: drop one")
        return _eval_task(args)
    text = load_text(args.data)  # read data before the slow model load, so a bad path fails fast
    if auto is not None:
        return _eval_auto(args, text)
    if quantized:
        return _eval_quantized(args, text)
    from ponder.adaptive import get_budget
    from ponder.eval import perplexity
    from ponder.report.terminal import render_eval

    kv = _kv_config(args)
    window_len = args.window_len or (KV_WINDOW_LEN if kv else WINDOW_LEN)
    if kv is not None:
        from ponder.kvcache import check_kv_budget

        check_kv_budget(kv.budget, window_len)  # a count above the context fails before the model loads
    model, tokenizer = _load(args)
    _apply_knobs(model, args)
    if kv is None:
        scored = perplexity(
            model, tokenizer, text, windows=args.windows, window_len=window_len, progress=not args.quiet
        )
    else:
        from ponder.kvcache.longctx import kv_perplexity

        scored = kv_perplexity(
            model, tokenizer, text, kv, windows=args.windows, window_len=window_len, progress=not args.quiet
        )
    result = scored.as_dict()
    result.update(model=args.model, data=args.data, budget=get_budget(model), method=_method(model))
    if kv is not None:
        result.update(kv_budget=kv.budget, kv_policy=kv.policy, kv_bits=kv.bits)
    _emit(args, result, render_eval)


def _eval_auto(args: argparse.Namespace, text: str) -> None:
    """Perplexity under --budget auto:B, scored a token at a time (each pass's budget follows the one before)."""
    from ponder.entropy_budget import stepwise_perplexity
    from ponder.report.terminal import render_eval

    model, tokenizer = _load(args)
    _apply_knobs(model, args)
    policy = _entropy_policy(model, tokenizer, args.budget, quiet=args.quiet)
    scored = stepwise_perplexity(
        model, tokenizer, text, policy=policy, windows=args.windows, window_len=args.window_len or WINDOW_LEN,
        progress=not args.quiet,
    )  # fmt: skip
    result = scored.as_dict()
    result.update(model=args.model, data=args.data, budget=args.budget.mean, method=_method(model))
    result["entropy_budget"] = {"edges": policy.edges, "levels": policy.levels}
    _emit(args, result, render_eval)


def _eval_quantized(args: argparse.Namespace, text: str) -> None:
    from ponder.eval.perplexity import decoder_perplexity
    from ponder.report.terminal import render_eval

    _no_knobs(args)
    decoder, tokenizer = _load_quantized(args, max_len=args.window_len or WINDOW_LEN)
    window_len = args.window_len or WINDOW_LEN
    result = decoder_perplexity(
        decoder, tokenizer, text, windows=args.windows, window_len=window_len, progress=not args.quiet
    ).as_dict()
    adaptive = {"budget": 1.0, "method": "dense"}
    if hasattr(decoder, "ffn_compute"):
        # each skipped neuron skips its rows' bytes in the same format: bytes follow MACs
        compute = decoder.ffn_compute
        adaptive = {"budget": decoder.budget, "method": decoder.method, "ffn_compute": compute, "ffn_bytes": compute}
    result.update(model=args.model, data=args.data, weights=decoder.model.weights, **adaptive)
    result["activations"] = decoder.activations
    _emit(args, result, render_eval)


def _eval_task(args: argparse.Namespace) -> None:
    from ponder.adaptive import get_budget
    from ponder.eval.tasks import evaluate_task
    from ponder.report.terminal import render_task

    model, tokenizer = _load(args)
    _apply_knobs(model, args)
    result = evaluate_task(
        model, tokenizer, args.task, limit=args.limit, batch_size=args.batch_size, progress=not args.quiet
    ).as_dict()
    result.update(model=args.model, budget=get_budget(model), method=_method(model))
    _emit(args, result, render_task)


def cmd_bench(args: argparse.Namespace) -> None:
    speculative = _speculative_factory(args) if _speculative(args) else None
    if _quantized(args):
        return _bench_quantized(args, speculative)
    from ponder.adaptive import set_policy
    from ponder.inference.bench import benchmark
    from ponder.report.terminal import render_bench

    model, tokenizer = _load(args)
    if args.policy is not None:
        set_policy(model, args.policy)
    kv = _kv_config(args)
    if kv is not None:
        return _bench_kv(args, model, tokenizer, kv)
    result = benchmark(
        model,
        tokenizer,
        budgets=args.budgets,
        prompt_tokens=args.prompt_tokens,
        new_tokens=args.new_tokens,
        prefill_tokens=args.prefill_tokens,
        repeats=args.repeats,
        progress=not args.quiet,
        ceiling=args.ceiling,
        speculative=speculative,
    )
    result["model"] = args.model
    _emit(args, result, render_bench)


def _bench_kv(args: argparse.Namespace, model, tokenizer, kv) -> None:
    """Decode through the compressed cache against the full cache, at --prompt-tokens of context."""
    from ponder.kvcache.bench import kv_benchmark, render_kv_bench

    if args.budgets or args.ceiling:
        raise PonderError("--kv-* times the KV cache at the model's own budget: drop --budgets and --ceiling")
    result = kv_benchmark(
        model, tokenizer, kv, prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens, repeats=args.repeats,
        progress=not args.quiet,
    )  # fmt: skip
    result["model"] = args.model
    _emit(args, result, render_kv_bench)


def _bench_quantized(args: argparse.Namespace, speculative=None) -> None:
    from ponder.quant.bench import benchmark_quantized
    from ponder.report.terminal import render_bench

    _no_knobs(args)
    if args.ceiling and not _adaptive_dir(args):
        raise PonderError("--ceiling times adaptive budgets: give a converted model")
    max_len = max(args.prompt_tokens + args.new_tokens, args.prefill_tokens)
    decoder, tokenizer = _load_quantized(args, max_len=max_len)
    result = benchmark_quantized(
        decoder,
        tokenizer,
        budgets=args.budgets if _adaptive_dir(args) else [],
        ceiling=args.ceiling,
        prompt_tokens=args.prompt_tokens,
        new_tokens=args.new_tokens,
        prefill_tokens=args.prefill_tokens,
        repeats=args.repeats,
        progress=not args.quiet,
        speculative=speculative,
    )
    result["model"] = args.model
    _emit(args, result, render_bench)


def cmd_demo(args: argparse.Namespace) -> None:
    from ponder.adaptive import convert, set_budget
    from ponder.data import EVAL_DEFAULT, load_text
    from ponder.eval import perplexity
    from ponder.inference.bench import benchmark
    from ponder.methods import get_method
    from ponder.report.terminal import console, render_bench, render_eval

    get_method(args.method)  # an unknown method fails now, not after the dense evaluation
    start = time.perf_counter()
    model, tokenizer = _load(args)  # dense first: the budget applies after conversion
    text = load_text(EVAL_DEFAULT)
    console.print(f"[bold]ponder demo[/] on {args.model}: dense perplexity on {EVAL_DEFAULT}")
    ppl = perplexity(model, tokenizer, text, windows=args.windows, progress=not args.quiet)
    evaluations = [{**ppl.as_dict(), "model": args.model, "data": EVAL_DEFAULT, "budget": 1.0, "method": "dense"}]
    render_eval(evaluations[0])
    console.print(f"[bold]convert[/] with {args.method} (calibrated on wikitext2-valid), then budget {args.budget}")
    convert(model, tokenizer, args.method, calibration_tokens=4096, progress=not args.quiet)
    set_budget(model, args.budget)
    ppl = perplexity(model, tokenizer, text, windows=args.windows, progress=not args.quiet)
    evaluations.append(
        {**ppl.as_dict(), "model": args.model, "data": EVAL_DEFAULT, "budget": args.budget, "method": args.method}
    )
    render_eval(evaluations[1])
    speed = benchmark(model, tokenizer, budgets=[args.budget], repeats=args.repeats, progress=not args.quiet)
    speed["model"] = args.model
    render_bench(speed)
    console.print(f"demo finished in {time.perf_counter() - start:.0f} s")
    if args.json:
        from ponder.io import write_json_atomic

        write_json_atomic(args.json, {"eval": evaluations, "bench": speed})


def cmd_inspect(args: argparse.Namespace) -> None:
    import torch

    from ponder.adaptive import adaptive_modules, get_budget
    from ponder.data import first_tokens, load_text
    from ponder.report.terminal import render_inspect
    from ponder.stats import inspect_routing

    text = load_text(args.data)
    model, tokenizer = _load(args)
    _apply_knobs(model, args)
    ids = first_tokens(tokenizer, text, args.tokens)
    if len(ids) < 2:
        raise PonderError(f"'{args.data}' has fewer than 2 tokens: give a longer text")
    result = inspect_routing(model, torch.tensor([ids]))
    modules = adaptive_modules(model)
    result.update(model=args.model, data=args.data, method=_method(model), budget=get_budget(model))
    result["policy"] = modules[0].policy if modules else None
    _emit(args, result, render_inspect)


def cmd_oracle(args: argparse.Namespace) -> None:
    from ponder.data import load_text
    from ponder.methods.nested.oracle import route_oracle
    from ponder.report.terminal import render_oracle

    text = load_text(args.data)
    model, tokenizer = _load(args)  # the oracle spends --budget itself
    result = route_oracle(
        model, tokenizer, text, budget=args.budget, tokens=args.tokens, small=args.small, progress=not args.quiet
    )
    result.update(model=args.model, data=args.data, method=_method(model))
    _emit(args, result, render_oracle)


def cmd_generate(args: argparse.Namespace) -> None:
    speculative = _speculative(args)
    auto = _auto_budget(args)
    if _quantized(args):
        _no_knobs(args)
        if args.show_compute:
            raise PonderError("--show-compute shades per-token compute of fp32 modules: drop --weights")
        tokenizer = _quantized_tokenizer(args)
        ids = _prompt(args, tokenizer)
        decoder, _ = _load_quantized(args, max_len=ids.shape[1] + args.max_new_tokens)
        if speculative:
            return _generate_speculative(args, tokenizer, decoder, ids)
        return _generate_plain(args, tokenizer, decoder, ids)
    from ponder.inference import LeanDecoder

    model, tokenizer = _load(args)
    _apply_knobs(model, args)
    ids = _prompt(args, tokenizer)
    if auto is not None:
        return _generate_auto(args, model, tokenizer, ids, auto)
    kv = _kv_config(args)
    if speculative:
        return _generate_speculative(
            args, tokenizer, LeanDecoder(model, max_len=ids.shape[1] + args.max_new_tokens), ids
        )
    if kv is None:
        decoder = LeanDecoder(model, max_len=ids.shape[1] + args.max_new_tokens)
    else:
        from ponder.kvcache import check_kv_budget
        from ponder.kvcache.generate import CachedGenerator

        check_kv_budget(kv.budget, ids.shape[1] + args.max_new_tokens)
        decoder = CachedGenerator(model, kv)
    controller = None
    if args.hold_budget:
        from ponder.adaptive import get_budget
        from ponder.control import BudgetController

        controller = BudgetController(model, get_budget(model))
    if args.show_compute:
        return _generate_with_compute(args, model, tokenizer, decoder, ids, controller)
    _generate_plain(args, tokenizer, decoder, ids, controller)


def _generate_auto(args: argparse.Namespace, model, tokenizer, ids, auto: AutoBudget) -> None:
    """Greedy generation under --budget auto:B, and the budgets its passes ran at."""
    from ponder.entropy_budget import EntropyBudgetDecoder
    from ponder.report.terminal import console
    from ponder.stats import ComputeMeter

    policy = _entropy_policy(model, tokenizer, auto, quiet=args.quiet)
    decoder = EntropyBudgetDecoder(model, policy, max_len=ids.shape[1] + args.max_new_tokens)
    with ComputeMeter(model) as meter:
        if args.show_compute:
            _generate_with_compute(args, model, tokenizer, decoder, ids)
        else:
            _generate_plain(args, tokenizer, decoder, ids)
    uses = ", ".join(f"{level:g}: {count}" for level, count in sorted(decoder.knob.uses.items()))
    console.print(
        f"[dim]FFN compute spent {meter.report.ffn_compute:.3f} for auto:{auto.mean:g} (passes at budgets {uses})[/]"
    )


def _prompt(args: argparse.Namespace, tokenizer):
    """The prompt's ids [1, T], in the chat template unless --raw or the tokenizer has none."""
    import torch

    if tokenizer.chat_template and not args.raw:
        messages = [{"role": "user", "content": args.prompt}]
        ids = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        ids = ids["input_ids"]
    else:
        ids = torch.tensor([tokenizer(args.prompt, add_special_tokens=False).input_ids])
    if ids.shape[1] == 0:
        raise PonderError("the prompt is empty: give some text to continue")
    return ids


def _generate_plain(args: argparse.Namespace, tokenizer, decoder, ids, controller=None) -> None:
    from ponder.report.terminal import console

    on_token = None if controller is None else lambda _: controller.update()
    start = time.perf_counter()
    out = decoder.generate(ids, args.max_new_tokens, eos_token_id=tokenizer.eos_token_id, on_token=on_token)
    seconds = time.perf_counter() - start
    new = out[0, ids.shape[1] :]
    console.print(tokenizer.decode(new, skip_special_tokens=True), highlight=False, markup=False)
    console.print(f"[dim]{len(new)} tokens in {seconds:.2f} s ({len(new) / seconds:.1f} tok/s)[/]")
    _held(controller)


def _generate_speculative(args: argparse.Namespace, tokenizer, decoder, ids) -> None:
    """Greedy generation through drafts verified by the model, and what the drafts bought."""
    from ponder.inference.speculative import describe
    from ponder.report.terminal import console

    speculative = _speculative_factory(args)(decoder)
    _generate_plain(args, tokenizer, speculative, ids)
    console.print(f"[dim]{describe(speculative)}[/]")


def _held(controller) -> None:
    """What --hold-budget did: the compute spent against the target, and where the knob ended."""
    from ponder.report.terminal import console

    if controller is not None:
        console.print(
            f"[dim]FFN compute spent {controller.spent:.3f} for budget {controller.target:g} "
            f"(knob ended at {controller.setting:.3f})[/]"
        )


def _generate_with_compute(args: argparse.Namespace, model, tokenizer, decoder, ids, controller=None) -> None:
    """Stream the answer, each token shaded by the FFN compute of the forward pass that chose it."""
    from rich.text import Text

    from ponder.report.html import shade
    from ponder.report.terminal import console
    from ponder.stats import ComputeTrace

    new: list[int] = []
    spent: list[float] = []
    shown = ""
    column = 0

    def show(token) -> None:
        nonlocal shown, column
        if controller is not None:
            controller.update()
        spent.append(float(trace.pop()[-1].mean()))  # the last position's forward chose this token
        new.append(int(token[0]))
        text = tokenizer.decode(new, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # hold back half a UTF-8 character until its other bytes arrive
            return
        piece, shown = text[len(shown) :], text
        if column + len(piece) > console.width and "\n" not in piece:  # wrap at token boundaries
            console.print()
            column, piece = 0, piece.lstrip(" ")
        console.print(Text(piece, style=f"black on {shade(spent[-1])}"), end="")
        column = len(piece.rsplit("\n", 1)[-1]) if "\n" in piece else column + len(piece)

    with ComputeTrace(model) as trace:
        start = time.perf_counter()
        decoder.generate(ids, args.max_new_tokens, eos_token_id=tokenizer.eos_token_id, on_token=show)
        seconds = time.perf_counter() - start
    console.print(tokenizer.decode(new, skip_special_tokens=True)[len(shown) :], highlight=False, markup=False)
    console.print(
        f"[dim]{len(new)} tokens in {seconds:.2f} s ({len(new) / seconds:.1f} tok/s, display included); "
        f"mean FFN compute {sum(spent) / len(spent):.3f} of dense (white = none, red = dense)[/]"
    )
    _held(controller)


def cmd_serve(args: argparse.Namespace) -> None:
    from ponder.report.terminal import console
    from ponder.serve import lean_backend, quant_backend, serve

    if _quantized(args):
        _no_knobs(args)
        weights = None if args.weights in (None, "fp32") else args.weights
        backend = quant_backend(args.model, weights, threads=args.threads)
    else:
        model, tokenizer = _load(args)
        _apply_knobs(model, args)
        backend = lean_backend(model, tokenizer)
    budget = f"budget per request, default {backend.default_budget():g}" if backend.adaptive else "dense"
    console.print(f"serving {args.model} ({budget}) at http://{args.host}:{args.port}/v1", highlight=False)
    serve(
        backend, model=args.model, host=args.host, port=args.port, max_queue=args.max_queue, timeout=args.timeout,
        quiet=args.quiet,
    )  # fmt: skip


def cmd_convert(args: argparse.Namespace) -> None:
    from ponder.adaptive import convert, save_adaptive
    from ponder.data import load_text
    from ponder.methods import make_config, parse_options
    from ponder.report.terminal import console
    from ponder.train.distributed import world

    options = parse_options(args.set)
    if args.min_budget:
        options["min_budget"] = str(args.min_budget)
    config = make_config(args.method, options)  # unknown method or bad options fail before the model load
    load_text(args.calib)  # so does bad calibration data
    _check_output(args)
    work = args.output.parent / f".{args.output.name}.partial"  # captured activations, per-layer checkpoints
    if work.exists() and not args.resume:
        raise PonderError(f"an interrupted conversion is in {work}: pass --resume to continue it, or delete it")
    model, tokenizer = _load(args)  # the budget is the converted model's, so convert applies it
    start = time.perf_counter()
    convert(
        model,
        tokenizer,
        args.method,
        config=config,
        calibration=args.calib,
        calibration_tokens=args.calib_tokens,
        budget=args.budget or 1.0,
        allocation=args.allocation,
        work_dir=work,
        resume=args.resume,
        progress=not args.quiet,
    )
    ranks = world()  # under torchrun every rank holds the whole converted model; the main rank writes it
    ranks.barrier()  # no rank still reads the work directory
    if ranks.main:
        save_adaptive(model, args.output, base_model=args.model)
        shutil.rmtree(work, ignore_errors=True)
        seconds = time.perf_counter() - start
        console.print(f"converted {args.model} with {args.method} in {seconds:.0f} s → {args.output}")
    ranks.close()


def cmd_quantize(args: argparse.Namespace) -> None:
    from ponder.models.load import load_tokenizer
    from ponder.quant import load_model, save_quantized
    from ponder.report.terminal import console

    if args.weights in (None, "fp32"):
        raise PonderError("give the block format to write: --weights q8_0, q4_0 or q4_1")
    _check_output(args)
    _quantized(args)  # the refusals every quantized run shares (adaptive models, --dtype)
    tokenizer = load_tokenizer(args.model)
    model = load_model(args.model, args.weights)
    save_quantized(model, args.output, tokenizer=tokenizer)
    megabytes = model.nbytes / 1e6
    console.print(f"wrote {args.output}: {args.weights} weights, {megabytes:.0f} MB")


def cmd_export(args: argparse.Namespace) -> None:
    from ponder.methods.nested.export import export_slice, greedy_widths, layer_learners, nested_modules
    from ponder.report.terminal import console

    _check_output(args)
    width = args.width[0] if len(args.width) == 1 else args.width
    if args.allocation == "greedy" and len(args.width) != 1:
        raise PonderError("--allocation greedy chooses the per-layer widths: give one mean --width")
    model, tokenizer = _load(args)
    modules = nested_modules(model)
    if args.allocation == "greedy":
        width = greedy_widths(model, tokenizer, [width], progress=not args.quiet)[0]
    learners = layer_learners(model, width)
    sliced = export_slice(model, tokenizer, width, args.output)
    per_layer = " ".join(map(str, learners)) if len(set(learners)) > 1 else str(learners[0])
    console.print(
        f"wrote {args.output}: {per_layer} of {modules[0].learners} learners per FFN "
        f"(mean width {sum(learners) / len(learners) / modules[0].learners:.3f}), "
        f"{sliced.num_parameters() / 1e6:.1f} M parameters (was {model.num_parameters() / 1e6:.1f} M)"
    )


def cmd_sweep(args: argparse.Namespace) -> None:
    from ponder.eval.sweep import merged, sweep
    from ponder.io import write_text_atomic
    from ponder.report.plots import pareto_plot, results_table
    from ponder.report.terminal import console

    records = sweep(
        args.model,
        args.methods.split(","),
        args.budgets,
        args.output,
        windows=args.windows,
        calibration_tokens=args.calib_tokens,
        task=args.task,
        task_limit=args.task_limit,
        bench=args.bench,
        bench_repeats=args.repeats,
        dtype=args.dtype,
        threads=args.threads,
        progress=not args.quiet,
        kv=_kv_config(args),
    )
    rows = merged(records)
    table = results_table(rows)
    write_text_atomic(args.output / "report" / "results.md", table)
    paths = pareto_plot(rows, args.output / "report")
    console.print(table, markup=False, highlight=False)
    console.print(f"plots: {', '.join(str(p) for p in paths)}")


def cmd_report(args: argparse.Namespace) -> None:
    from ponder.adaptive import set_budget
    from ponder.data import load_text
    from ponder.eval.sweep import merged, read_records
    from ponder.report.html import compute_heatmap, render_report, write_report
    from ponder.report.plots import pareto_plot
    from ponder.report.terminal import console

    rows = merged(read_records(args.directory))
    if not rows:
        raise PonderError(f"no sweep results in '{args.directory}': run `ponder sweep MODEL ... -o {args.directory}`")
    models = args.directory / "models"
    methods = (
        sorted(p.name for p in models.iterdir() if p.is_dir() and not p.name.startswith("."))
        if models.is_dir()
        else []
    )
    method = args.method or (methods[0] if methods else None)
    if method is not None and method not in methods:
        raise PonderError(f"no converted '{method}' model in {models}: choose one of {', '.join(methods) or 'none'}")
    text = load_text(args.text)
    output = args.output or args.directory / "report" / "index.html"
    svg = pareto_plot(rows, output.parent)[1].read_text()
    heatmap = None
    if method is not None:
        model, tokenizer = _load(args, str(models / method))
        set_budget(model, args.budget)
        heatmap = compute_heatmap(model, tokenizer, text, max_tokens=args.tokens)
        heatmap.method = method  # the sweep's name, e.g. teal+greedy
    model_name = next((r["model"] for r in rows if "model" in r), str(args.directory))
    page = render_report(rows, plot_svg=svg, heatmap=heatmap, title=f"ponder sweep: {model_name}")
    console.print(f"report: {write_report(page, output)}")


# --- the commands: each one's options, then the table ---------------------------------------------------------


def _demo_options(parser: argparse.ArgumentParser) -> None:
    _add_model(parser, positional=False)
    _add_windows(parser, default=10)
    parser.add_argument("--method", default="teal", help="sparse method shown beside dense (default teal)")
    _add_budget(parser, default=0.5, help="budget of the sparse rows (default 0.5)")
    _add_repeats(parser)
    _add_json(parser, what="all results")


WINDOW_LEN = 1024
KV_WINDOW_LEN = 2048
"""The long-context protocol's windows: prefill the first part, decode the last tokens through the KV cache."""


def _eval_options(parser: argparse.ArgumentParser) -> None:
    _add_model(parser)
    _add_budget(parser, auto=True)
    _add_policy(parser)
    _add_text(parser)
    _add_windows(parser, default=20)
    parser.add_argument(
        "--window-len",
        type=positive,
        default=None,
        help=f"tokens per window (default {WINDOW_LEN}; {KV_WINDOW_LEN} with --kv-*, whose last 256 decode)",
    )
    parser.add_argument("--task", type=task_name, default=None, help="zero-shot accuracy instead of perplexity: piqa")
    parser.add_argument("--limit", type=positive, default=None, help="first N task items only")
    parser.add_argument("--batch-size", type=positive, default=32, help="sequences per forward pass for --task")
    _add_kv(parser)
    _add_json(parser)


def _bench_options(parser: argparse.ArgumentParser) -> None:
    _add_model(parser)
    _add_budgets(parser)
    _add_policy(parser)
    _add_repeats(parser)
    parser.add_argument("--prompt-tokens", type=positive, default=64, help="prompt of the decode runs (default 64)")
    parser.add_argument("--new-tokens", type=positive, default=128, help="tokens decoded per run (default 128)")
    parser.add_argument(
        "--prefill-tokens", type=positive, default=512, help="prompt of the prefill runs (default 512)"
    )
    parser.add_argument(
        "--ceiling",
        action="store_true",
        help="also time each budget's decode through the perfect width executor (a contiguous slice of every FFN "
        "at the compute the budget spent): the most any executor could gain there",
    )
    _add_kv(parser)
    _add_speculative(parser)
    _add_json(parser)


def _convert_options(parser: argparse.ArgumentParser) -> None:
    _add_model(parser)
    parser.add_argument(
        "--method", required=True, help="teal, cats, predictor, core, nested, moe or skip (layer skip)"
    )
    _add_output(parser, help="directory for the converted model")
    _add_budget(parser, help="budget saved with the model (default 1)")
    parser.add_argument("--calib", default="wikitext2-valid", help="calibration text (never the evaluation text)")
    _add_calibration_tokens(parser)
    parser.add_argument("--min-budget", type=budget, default=None, help="lowest budget to calibrate")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a method option (repeatable), e.g. --set experts=32 --set pseudo_experts=zero/constant",
    )
    _add_allocation(
        parser, help="per-layer budgets: uniform (default) or greedy by calibration loss (~15 min more for SmolLM2)"
    )
    parser.add_argument("--resume", action="store_true", help="continue an interrupted conversion into the same -o")


def _quantize_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model loading")  # no --dtype: the blocks are made from fp32 values
    group.add_argument("model", help="alias (smollm2-135m), HF model directory or .gguf file")
    group.add_argument("--weights", choices=WEIGHTS[1:], required=True, help="block format: q8_0, q4_0 or q4_1")
    group.add_argument("--threads", type=positive, default=None, help="torch intra-op threads (default: torch's)")
    group.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(dtype="float32")
    _add_output(parser, help="directory for the quantized model (safetensors blocks, config, tokenizer)")


def _export_options(parser: argparse.ArgumentParser) -> None:
    _add_model(parser)
    parser.add_argument(
        "--width",
        type=budget_list,
        required=True,
        help="fraction of FFN neurons kept: one for every layer, or a comma list with one per layer",
    )
    _add_allocation(
        parser, help="greedy: per-layer widths with this mean, chosen by calibration loss (Mix'n'Match, ~17 min)"
    )
    _add_output(parser, help="directory for the HF checkpoint")


def _sweep_options(parser: argparse.ArgumentParser) -> None:
    _add_model(parser)
    parser.add_argument(
        "--methods", required=True, help="comma-separated, e.g. teal,cats,predictor,nested; teal+greedy allocates"
    )
    _add_budgets(parser, default=[1.0, 0.75, 0.5, 0.35, 0.25])
    _add_output(parser, help="sweep directory (reused to resume)", overwrite=False)
    _add_windows(parser, default=20)
    _add_calibration_tokens(parser)
    parser.add_argument("--task", type=task_name, default=None, help="also zero-shot accuracy at every point: piqa")
    parser.add_argument("--task-limit", type=positive, default=None, help="first N task items only")
    parser.add_argument("--bench", action="store_true", help="also time decode/prefill per budget (same process)")
    _add_repeats(parser)
    _add_kv(parser)


def _report_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", type=Path, help="a `ponder sweep` output directory")
    parser.add_argument("--method", default=None, help="method of the heatmap (default: the first converted)")
    _add_budget(parser, default=0.5, help="budget of the heatmap (default 0.5)")
    _add_text(parser, tokens=200, name="--text")
    parser.add_argument("-o", "--output", type=Path, default=None, help="HTML file (default DIR/report/index.html)")
    _add_loading(parser.add_argument_group("model loading"))


def _inspect_options(parser: argparse.ArgumentParser) -> None:
    _add_model(parser)
    _add_budget(parser)
    _add_policy(parser)
    _add_text(parser, tokens=1024)
    _add_json(parser, what="the statistics")


def _oracle_options(parser: argparse.ArgumentParser) -> None:
    _add_model(parser)
    _add_budget(parser, default=0.5, help="mean fraction of FFN compute (default 0.5)")
    _add_text(parser, tokens=512)
    parser.add_argument("--small", type=float, default=0.25, help="width of the small option (default 0.25)")
    _add_json(parser)


def _generate_options(parser: argparse.ArgumentParser) -> None:
    _add_model(parser)
    parser.add_argument("prompt", help="text to continue (in the chat template, if the tokenizer has one)")
    parser.add_argument("--max-new-tokens", type=positive, default=64, help="tokens to generate (default 64)")
    _add_budget(parser, auto=True)
    _add_policy(parser)
    parser.add_argument("--raw", action="store_true", help="do not apply the tokenizer's chat template")
    parser.add_argument("--show-compute", action="store_true", help="stream tokens shaded by the FFN compute used")
    parser.add_argument(
        "--hold-budget",
        action="store_true",
        help="steer the knob while generating so the FFN compute spent stays at --budget (thresholds calibrated on "
        "other text drift on the model's own answers)",
    )
    _add_kv(parser)
    _add_speculative(parser)


def _serve_options(parser: argparse.ArgumentParser) -> None:
    _add_model(parser)
    _add_budget(parser, help=BUDGET_HELP + "; the default of requests that give none (default: the model's)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)")
    parser.add_argument("--port", type=port, default=8000, help="port to listen on (default 8000)")
    parser.add_argument(
        "--max-queue", type=positive, default=16, help="requests waiting for the model before a 429 (default 16)"
    )
    parser.add_argument(
        "--timeout", type=seconds, default=600.0, help="seconds a request may take, queue included (default 600)"
    )


@dataclass(frozen=True)
class Command:
    help: str
    options: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], None]


COMMANDS: dict[str, Command] = {
    "demo": Command("perplexity and speed of the embedded default model", _demo_options, cmd_demo),
    "eval": Command("perplexity and compute per token", _eval_options, cmd_eval),
    "bench": Command("decode and prefill speed against the dense model, same process", _bench_options, cmd_bench),
    "convert": Command(
        "make a model adaptive with a method, calibrated on held-out text", _convert_options, cmd_convert
    ),
    "quantize": Command(
        "write a model's projections in a GGUF block format (--weights), for the quantized runtime",
        _quantize_options,
        cmd_quantize,
    ),
    "export": Command("write a nested model at static widths as a plain HF checkpoint", _export_options, cmd_export),
    "sweep": Command("evaluate methods x budgets; table and Pareto plot (resumable)", _sweep_options, cmd_sweep),
    "report": Command(
        "one self-contained HTML page: sweep table, plots, compute heatmap", _report_options, cmd_report
    ),
    "inspect": Command("per-layer compute and routing statistics of a converted model", _inspect_options, cmd_inspect),
    "oracle": Command("best routes (skip/small/big per token and layer) vs the router", _oracle_options, cmd_oracle),
    "generate": Command("greedy generation with the lean decoder", _generate_options, cmd_generate),
    "serve": Command(
        "an OpenAI-compatible HTTP server (completions, chat, streaming) with a per-request budget",
        _serve_options,
        cmd_serve,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ponder", description="Compute-adaptive transformer language models, measured honestly.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, command in COMMANDS.items():
        sub = commands.add_parser(name, help=command.help, description=command.help)
        command.options(sub)
        sub.set_defaults(run=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        _show_progress(args.quiet)
        if hasattr(args, "weights"):
            _quantized(args)  # refuses what the quantized runtime cannot run, before any command starts
        args.run(args)
    except PonderError as e:
        print(f"ponder: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("ponder: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
