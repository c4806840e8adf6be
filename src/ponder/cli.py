"""The `ponder` command: a table from command names to library functions, with one-line errors (exit 2)."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ponder.errors import PonderError
from ponder.methods.moe.routing import POLICIES
from ponder.state import method_name

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors, like every other ponder error."""

    def error(self, message: str) -> None:
        raise PonderError(f"{message} (see `{self.prog} --help`)")


def _budget(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"budget '{text}' is not a number: give a fraction in (0, 1]") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"budget {value} is outside (0, 1]: give a fraction of dense FFN compute")
    return value


def _budgets(text: str) -> list[float]:
    return [_budget(part) for part in text.split(",") if part.strip()]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _load(args: argparse.Namespace, *, apply_budget: bool = True):
    from transformers.utils import logging as hf_logging

    from ponder.adaptive import load, set_budget, set_policy

    hf_logging.set_verbosity_error()
    if args.quiet:
        hf_logging.disable_progress_bar()
    model, tokenizer = load(args.model, dtype=args.dtype, threads=args.threads)
    if apply_budget and getattr(args, "budget", None) is not None:
        set_budget(model, args.budget)
    if getattr(args, "policy", None) is not None:
        set_policy(model, args.policy)
    return model, tokenizer


def _method(model) -> str:
    return method_name(model)


def _emit(args: argparse.Namespace, result: dict, render: Callable[[dict], None]) -> None:
    from ponder.io import write_json_atomic

    if args.json:
        write_json_atomic(args.json, result)
    render(result)


def cmd_eval(args: argparse.Namespace) -> None:
    from ponder.adaptive import get_budget
    from ponder.data import load_text
    from ponder.eval import perplexity
    from ponder.report.terminal import render_eval

    if args.task:
        return _eval_task(args)
    text = load_text(args.data)  # read data before the slow model load, so a bad path fails fast
    model, tokenizer = _load(args)
    result = perplexity(
        model, tokenizer, text, windows=args.windows, window_len=args.window_len, progress=not args.quiet
    ).as_dict()
    result.update(model=args.model, data=args.data, budget=get_budget(model), method=_method(model))
    _emit(args, result, render_eval)


def _eval_task(args: argparse.Namespace) -> None:
    from ponder.adaptive import get_budget
    from ponder.eval.tasks import check_task, evaluate_task
    from ponder.report.terminal import render_task

    check_task(args.task)  # before the slow model load
    model, tokenizer = _load(args)
    result = evaluate_task(
        model, tokenizer, args.task, limit=args.limit, batch_size=args.batch_size, progress=not args.quiet
    ).as_dict()
    result.update(model=args.model, budget=get_budget(model), method=_method(model))
    _emit(args, result, render_task)


def cmd_bench(args: argparse.Namespace) -> None:
    from ponder.inference.bench import benchmark
    from ponder.report.terminal import render_bench

    model, tokenizer = _load(args)
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
    model, tokenizer = _load(args, apply_budget=False)  # the budget applies after conversion
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
    model, tokenizer = _load(args, apply_budget=False)
    result = route_oracle(
        model, tokenizer, text, budget=args.budget, tokens=args.tokens, small=args.small, progress=not args.quiet
    )
    result.update(model=args.model, data=args.data, method=_method(model))
    _emit(args, result, render_oracle)


def cmd_generate(args: argparse.Namespace) -> None:
    import torch

    from ponder.inference import LeanDecoder
    from ponder.report.terminal import console

    model, tokenizer = _load(args)
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
    decoder = LeanDecoder(model, max_len=ids.shape[1] + args.max_new_tokens)
    if args.show_compute:
        return _generate_with_compute(args, model, tokenizer, decoder, ids)
    start = time.perf_counter()
    out = decoder.generate(ids, args.max_new_tokens, eos_token_id=tokenizer.eos_token_id)
    seconds = time.perf_counter() - start
    new = out[0, ids.shape[1] :]
    console.print(tokenizer.decode(new, skip_special_tokens=True), highlight=False, markup=False)
    console.print(f"[dim]{len(new)} tokens in {seconds:.2f} s ({len(new) / seconds:.1f} tok/s)[/]")


def _generate_with_compute(args: argparse.Namespace, model, tokenizer, decoder, ids) -> None:
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
    if args.output.exists() and not args.overwrite:
        raise PonderError(f"output '{args.output}' exists: pass --overwrite or choose another -o")
    work = args.output.parent / f".{args.output.name}.partial"  # captured activations, per-layer checkpoints
    if work.exists() and not args.resume:
        raise PonderError(f"an interrupted conversion is in {work}: pass --resume to continue it, or delete it")
    model, tokenizer = _load(args)
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


def cmd_export(args: argparse.Namespace) -> None:
    from ponder.methods.nested.export import export_slice, greedy_widths, layer_learners, nested_modules
    from ponder.report.terminal import console

    if args.output.exists() and not args.overwrite:
        raise PonderError(f"output '{args.output}' exists: pass --overwrite or choose another -o")
    width = args.width[0] if len(args.width) == 1 else args.width
    if args.allocation == "greedy" and len(args.width) != 1:
        raise PonderError("--allocation greedy chooses the per-layer widths: give one mean --width")
    model, tokenizer = _load(args, apply_budget=False)
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
        progress=not args.quiet,
    )
    rows = merged(records)
    table = results_table(rows)
    write_text_atomic(args.output / "report" / "results.md", table)
    paths = pareto_plot(rows, args.output / "report")
    console.print(table, markup=False, highlight=False)
    console.print(f"plots: {', '.join(str(p) for p in paths)}")


def cmd_report(args: argparse.Namespace) -> None:
    from ponder.adaptive import load, set_budget
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
        model, tokenizer = load(str(models / method), dtype=args.dtype, threads=args.threads)
        set_budget(model, args.budget)
        heatmap = compute_heatmap(model, tokenizer, text, max_tokens=args.tokens)
        heatmap.method = method  # the sweep's name, e.g. teal+greedy
    model_name = next((r["model"] for r in rows if "model" in r), str(args.directory))
    page = render_report(rows, plot_svg=svg, heatmap=heatmap, title=f"ponder sweep: {model_name}")
    console.print(f"report: {write_report(page, output)}")


def _common(parser: argparse.ArgumentParser, model: bool = True) -> None:
    from ponder.models.load import DEFAULT_MODEL

    if model:
        parser.add_argument(
            "model", help="alias (smollm2-135m), HF model directory, .gguf file, or converted directory"
        )
    else:
        parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model to run on (default {DEFAULT_MODEL})")
    parser.add_argument("--dtype", default="float32", help="float32 (default), bfloat16 or float16")
    parser.add_argument("--threads", type=_positive, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ponder", description="Compute-adaptive transformer language models, measured honestly.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    demo = commands.add_parser("demo", help="perplexity and speed of the embedded default model")
    _common(demo, model=False)
    demo.add_argument("--windows", type=_positive, default=10, help="1024-token windows for perplexity")
    demo.add_argument("--method", default="teal", help="sparse method shown beside dense (default teal)")
    demo.add_argument("--budget", type=_budget, default=0.5, help="budget of the sparse rows (default 0.5)")
    demo.add_argument("--repeats", type=_positive, default=5, help="timed rounds per configuration")
    demo.add_argument("--json", help="write all results to this JSON file")
    demo.set_defaults(run=cmd_demo)

    ev = commands.add_parser("eval", help="perplexity and compute per token")
    _common(ev)
    ev.add_argument("--data", default="wikitext2", help="bundled name (wikitext2, wikitext2-valid) or .txt/.jsonl")
    ev.add_argument("--windows", type=_positive, default=20, help="number of windows scored (default 20)")
    ev.add_argument("--window-len", type=_positive, default=1024, help="tokens per window (default 1024)")
    ev.add_argument("--budget", type=_budget, default=None, help="target fraction of dense FFN compute, (0, 1]")
    ev.add_argument("--task", default=None, help="zero-shot task accuracy instead of perplexity: piqa")
    ev.add_argument("--limit", type=_positive, default=None, help="first N task items only")
    ev.add_argument("--batch-size", type=_positive, default=32, help="sequences per forward pass for --task")
    ev.add_argument("--json", help="write the result to this JSON file")
    ev.add_argument("--policy", default=None, help="routing policy of a routed model: " + ", ".join(POLICIES))
    ev.set_defaults(run=cmd_eval)

    bench = commands.add_parser("bench", help="decode and prefill speed against the dense model, same process")
    _common(bench)
    bench.add_argument("--budgets", type=_budgets, default=None, help="comma-separated budgets, e.g. 0.75,0.5")
    bench.add_argument("--repeats", type=_positive, default=5, help="timed rounds (default 5)")
    bench.add_argument("--prompt-tokens", type=_positive, default=64)
    bench.add_argument("--new-tokens", type=_positive, default=128)
    bench.add_argument("--prefill-tokens", type=_positive, default=512)
    bench.add_argument("--json", help="write the result to this JSON file")
    bench.add_argument("--policy", default=None, help="routing policy of a routed model: " + ", ".join(POLICIES))
    bench.add_argument(
        "--ceiling",
        action="store_true",
        help="also time each budget's decode through the perfect width executor (a contiguous slice of every FFN "
        "at the compute the budget spent): the most any executor could gain there",
    )
    bench.set_defaults(run=cmd_bench)

    conv = commands.add_parser("convert", help="make a model adaptive with a method, calibrated on held-out text")
    _common(conv)
    conv.add_argument("--method", required=True, help="teal, cats, predictor, core, nested, moe or skip (layer skip)")
    conv.add_argument("-o", "--output", type=Path, required=True, help="directory for the converted model")
    conv.add_argument("--budget", type=_budget, default=None, help="budget saved with the model (default 1)")
    conv.add_argument("--calib", default="wikitext2-valid", help="calibration text (never the evaluation text)")
    conv.add_argument("--calib-tokens", type=_positive, default=8192, help="calibration tokens (default 8192)")
    conv.add_argument("--min-budget", type=_budget, default=None, help="lowest budget to calibrate")
    conv.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a method option (repeatable), e.g. --set experts=32 --set pseudo_experts=zero/constant",
    )
    conv.add_argument(
        "--allocation",
        choices=["uniform", "greedy"],
        default="uniform",
        help="per-layer budgets: uniform (default) or greedy by calibration loss (~15 min more for SmolLM2 here)",
    )
    conv.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    conv.add_argument("--resume", action="store_true", help="continue an interrupted conversion into the same -o")
    conv.set_defaults(run=cmd_convert)

    ex = commands.add_parser("export", help="write a nested model at static widths as a plain HF checkpoint")
    _common(ex)
    ex.add_argument(
        "--width",
        type=_budgets,
        required=True,
        help="fraction of FFN neurons kept: one for every layer, or a comma list with one per layer",
    )
    ex.add_argument(
        "--allocation",
        choices=("uniform", "greedy"),
        default="uniform",
        help="greedy: per-layer widths with this mean, chosen by calibration loss (Mix'n'Match, ~17 min for SmolLM2)",
    )
    ex.add_argument("-o", "--output", type=Path, required=True, help="directory for the HF checkpoint")
    ex.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    ex.set_defaults(run=cmd_export)

    sw = commands.add_parser("sweep", help="evaluate methods x budgets; table and Pareto plot (resumable)")
    _common(sw)
    sw.add_argument(
        "--methods", required=True, help="comma-separated, e.g. teal,cats,predictor,nested; teal+greedy allocates"
    )
    sw.add_argument("--budgets", type=_budgets, default=[1.0, 0.75, 0.5, 0.35, 0.25])
    sw.add_argument("-o", "--output", type=Path, required=True, help="sweep directory (reused to resume)")
    sw.add_argument("--windows", type=_positive, default=20)
    sw.add_argument("--calib-tokens", type=_positive, default=8192)
    sw.add_argument("--task", default=None, help="also score zero-shot accuracy on this task at every point: piqa")
    sw.add_argument("--task-limit", type=_positive, default=None, help="first N task items only")
    sw.add_argument("--bench", action="store_true", help="also time decode/prefill per budget (same process)")
    sw.add_argument("--repeats", type=_positive, default=5, help="timed rounds when --bench")
    sw.set_defaults(run=cmd_sweep)

    rep = commands.add_parser("report", help="one self-contained HTML page: sweep table, plots, compute heatmap")
    rep.add_argument("directory", type=Path, help="a `ponder sweep` output directory")
    rep.add_argument("--method", default=None, help="method of the heatmap (default: the first converted)")
    rep.add_argument("--budget", type=_budget, default=0.5, help="budget of the heatmap (default 0.5)")
    rep.add_argument("--text", default="wikitext2", help="text of the heatmap: bundled name or .txt/.jsonl file")
    rep.add_argument("--tokens", type=_positive, default=200, help="tokens shown in the heatmap (default 200)")
    rep.add_argument("-o", "--output", type=Path, default=None, help="HTML file (default DIR/report/index.html)")
    rep.add_argument("--dtype", default="float32", help="float32 (default), bfloat16 or float16")
    rep.add_argument("--threads", type=_positive, default=None, help="torch intra-op threads")
    rep.add_argument("--quiet", action="store_true", help="no progress bars")
    rep.set_defaults(run=cmd_report)

    ins = commands.add_parser("inspect", help="per-layer compute and routing statistics of a converted model")
    _common(ins)
    ins.add_argument("--budget", type=_budget, default=None, help="target fraction of dense FFN compute, (0, 1]")
    ins.add_argument("--policy", default=None, help="routing policy of a routed model: " + ", ".join(POLICIES))
    ins.add_argument("--data", default="wikitext2", help="text to route: bundled name or .txt/.jsonl file")
    ins.add_argument("--tokens", type=_positive, default=1024, help="tokens of the text (default 1024)")
    ins.add_argument("--json", help="write the statistics to this JSON file")
    ins.set_defaults(run=cmd_inspect)

    ora = commands.add_parser("oracle", help="best routes (skip/small/big per token and layer) vs the router")
    _common(ora)
    ora.add_argument("--budget", type=_budget, default=0.5, help="mean fraction of FFN compute (default 0.5)")
    ora.add_argument("--data", default="wikitext2", help="text to route: bundled name or .txt/.jsonl file")
    ora.add_argument("--tokens", type=_positive, default=512, help="tokens of the text (default 512)")
    ora.add_argument("--small", type=float, default=0.25, help="width of the small option (default 0.25)")
    ora.add_argument("--json", help="write the result to this JSON file")
    ora.set_defaults(run=cmd_oracle)

    gen = commands.add_parser("generate", help="greedy generation with the lean decoder")
    _common(gen)
    gen.add_argument("prompt")
    gen.add_argument("--max-new-tokens", type=_positive, default=64)
    gen.add_argument("--budget", type=_budget, default=None, help="target fraction of dense FFN compute, (0, 1]")
    gen.add_argument("--raw", action="store_true", help="do not apply the tokenizer's chat template")
    gen.add_argument("--show-compute", action="store_true", help="stream tokens shaded by the FFN compute used")
    gen.add_argument("--policy", default=None, help="routing policy of a routed model: " + ", ".join(POLICIES))
    gen.set_defaults(run=cmd_generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
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
