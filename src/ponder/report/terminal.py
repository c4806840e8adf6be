"""Rich tables for `eval` and `bench` results (the JSON dicts the library returns)."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

# Wide enough for the bench table when output goes to a file or CI log.
console = Console(width=None if sys.stdout.isatty() else 120)


def render_eval(result: dict) -> None:
    table = Table(title=f"perplexity · {result['model']} · {result['data']}", show_header=True)
    for column in ("method", "budget", "perplexity", "tokens", "tokens/s", "FFN compute", "FFN bytes"):
        table.add_column(column, justify="right")
    table.add_row(
        result["method"],
        f"auto:{result['budget']:g}" if "entropy_budget" in result else f"{result['budget']:.2f}",
        f"{result['perplexity']:.3f}",
        str(result["tokens"]),
        f"{result['tokens_per_s']:.0f}",
        f"{result['ffn_compute']:.3f}",
        f"{result['ffn_bytes']:.3f}",
    )
    console.print(table)


def render_task(result: dict) -> None:
    table = Table(title=f"{result['task']} (zero-shot) · {result['model']}")
    for column in ("method", "budget", "acc", "acc_norm", "items", "FFN compute"):
        table.add_column(column, justify="right")
    table.add_row(
        result["method"],
        f"{result['budget']:.2f}",
        f"{result['acc']:.4f} ± {result['acc_stderr']:.4f}",
        f"{result['acc_norm']:.4f} ± {result['acc_norm_stderr']:.4f}",
        str(result["n"]),
        f"{result['ffn_compute']:.3f}",
    )
    console.print(table)


def _rate(row: dict, key: str) -> str:
    return f"{row[key]:.1f} ({row[key + '_min']:.1f}-{row[key + '_max']:.1f})"


def render_bench(result: dict) -> None:
    weights = result.get("weights") or result["dtype"]  # a quantized run names its block format
    title = (
        f"speed · {result['model']} · {weights} · {result['threads']} threads · {result['cpu']} · "
        f"median (min-max) of {result['repeats']}"
    )
    table = Table(title=title)
    ceiling = any("ceiling_decode_speedup" in row for row in result["budgets"])
    columns = ("configuration", "FFN compute", "decode tok/s", "decode ×", "prefill tok/s", "prefill ×")
    for column in columns + (("ceiling decode ×",) if ceiling else ()):
        table.add_column(column, justify="right")
    hf = result.get("hf_generate")  # absent for the quantized runtime, which transformers does not run
    dense = result["dense"]
    blank = ("",) if ceiling else ()
    if hf is not None:
        table.add_row("transformers.generate (dense)", "1.000", _rate(hf, "decode_tok_s"), "", "", "", *blank)
    table.add_row(
        f"dense (lean, {result['lean_path']})",
        "1.000",
        _rate(dense, "decode_tok_s"),
        "1.00",
        _rate(dense, "prefill_tok_s"),
        "1.00",
        *blank,
    )
    for row in result["budgets"]:
        bound = row.get("ceiling_decode_speedup")
        table.add_row(
            f"{result['method']} @ {row['budget']:.2f}",
            f"{row['ffn_compute']:.3f}",
            _rate(row, "decode_tok_s"),
            f"{row['decode_speedup']:.2f}",
            _rate(row, "prefill_tok_s"),
            f"{row['prefill_speedup']:.2f}",
            *((f"{bound:.2f}" if bound else "n/a",) if ceiling else ()),
        )
    spec = result.get("speculative")
    if spec is not None:
        table.add_row(
            f"speculative ({spec['draft']}, k≤{spec['k']})", "1.000", _rate(spec, "decode_tok_s"),
            f"{spec['decode_speedup']:.2f}", "", "", *blank,
        )  # fmt: skip
    console.print(table)
    if spec is not None:
        console.print(
            f"speculative: {spec['acceptance_rate']:.2f} of drafts kept, {spec['tokens_per_verify']:.2f} tokens a "
            f"pass, {spec['mean_drafts']:.1f} drafts a verified pass; same tokens as dense: "
            f"{'yes' if spec['tokens_match_dense'] else 'NO'}"
        )
    against_hf = (
        f"lean dense decode vs transformers.generate: {dense['speedup_vs_hf_generate']:.2f}× "
        f"(same tokens: {'yes' if result['tokens_match_hf'] else 'NO'}); "
        if hf is not None
        else f"{result['activations']} activations; "
    )
    console.print(
        f"{against_hf}weights read per token {dense['weight_bytes_per_token'] / 1e6:.0f} MB → "
        f"{dense['bandwidth_gb_s']:.1f} GB/s achieved; peak memory {result['peak_rss_mb']:.0f} MB"
    )


def _bar(share: float, width: int = 20) -> str:
    filled = round(min(max(share, 0.0), 1.0) * width)
    return "█" * filled + "·" * (width - filled)


def render_inspect(result: dict) -> None:
    """Per layer: FFN compute, experts per token, the busiest and idlest expert's share, pseudo experts' shares."""
    routed = "experts_per_token" in result
    title = f"where compute goes · {result['model']} · {result['method']} @ {result['budget']:.2f}"
    if result.get("policy"):
        title += f" · {result['policy']}"
    table = Table(title=f"{title} · {result['tokens']} tokens of {result['data']}")
    columns = ["layer", "FFN compute", ""]
    if routed:
        pseudo = list(result["pseudo_share"])
        columns += ["experts/token", "busiest", "idlest", "0 experts", *pseudo]
    for column in columns:
        table.add_column(column, justify="right")
    for layer in result["layers"]:
        row = [str(layer["layer"]), f"{layer['ffn_compute']:.3f}", _bar(layer["ffn_compute"])]
        if routed and not layer["load_share"]:  # nothing routed: the dense path at budget 1
            row += ["-"] * (len(columns) - len(row))
        elif routed:
            load, histogram = layer["load_share"], layer["histogram"]
            row += [f"{layer['experts_per_token']:.1f} / {len(load)}", f"{max(load):.2f}", f"{min(load):.2f}"]
            row += [f"{histogram[0] / max(layer['tokens'], 1):.2f}"]
            row += [f"{layer['pseudo_share'][name]:.2f}" for name in pseudo]
        table.add_row(*row)
    console.print(table)
    line = f"mean FFN compute {result['ffn_compute']:.3f} of dense"
    if routed:
        shares = ", ".join(f"{name} {share:.2f}" for name, share in result["pseudo_share"].items())
        line += f"; {result['experts_per_token']:.1f} routed experts per token" + (
            f"; pseudo experts: {shares}" if shares else ""
        )
    console.print(line)


def render_oracle(result: dict) -> None:
    """Oracle routes against the router at the same compute: perplexity, then where each spends compute."""
    options = result["options"]
    title = f"oracle routes vs router · {result['model']} @ {result['budget']:.2f} · {result['tokens']} tokens"
    table = Table(title=f"{title} of {result['data']} · small = {options['small']}/{options['big']} learners")
    for column in ("layer", "oracle", "", "router", ""):
        table.add_column(column, justify="right")
    for layer in result["layers"]:
        oracle, gate = layer["oracle"], layer["gate"]
        table.add_row(str(layer["layer"]), f"{oracle:.3f}", _bar(oracle), f"{gate:.3f}", _bar(gate))
    console.print(table)
    for key, title in (("by_difficulty", "quartile of dense loss"), ("by_kind", "token kind")):
        rows = Table(title=f"compute by {title}")
        label = "quartile" if key == "by_difficulty" else "kind"
        for column in (label, "oracle", "router"):
            rows.add_column(column, justify="right")
        for row in result[key]:
            rows.add_row(str(row[label]), f"{row['oracle']:.3f}", f"{row['gate']:.3f}")
        console.print(rows)
    shares = ", ".join(f"{name} {share:.2f}" for name, share in result["oracle_route_share"].items())
    console.print(
        f"dense perplexity {result['dense_perplexity']:.2f}; oracle {result['oracle_perplexity']:.2f} at FFN "
        f"compute {result['oracle_ffn_compute']:.3f} (layers chosen independently: "
        f"{result['oracle_independent_perplexity']:.2f}; routes: {shares}); router {result['gate_perplexity']:.2f} "
        f"at {result['gate_ffn_compute']:.3f} (budget {result['gate_budget']:.3f})"
    )
