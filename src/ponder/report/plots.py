"""Pareto plots of quality against compute (and measured speed-up), one line per method."""

from __future__ import annotations

from pathlib import Path

import matplotlib

from ponder.errors import PonderError

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

PANELS = [  # (x key, y key, x label, y label); a panel is drawn when some point has both keys
    ("ffn_compute", "perplexity", "achieved FFN compute (fraction of dense FLOPs)", "perplexity (lower is better)"),
    ("decode_speedup", "perplexity", "decode speed-up vs dense", "perplexity (lower is better)"),
    ("task_ffn_compute", "acc", "achieved FFN compute on the task", "task accuracy (higher is better)"),
]


def pareto_plot(rows: list[dict], directory: str | Path) -> list[Path]:
    """Write pareto.png and pareto.svg: perplexity vs achieved FFN compute, and, where measured, perplexity vs
    decode speed-up and task accuracy vs FFN compute."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    panels = [panel for panel in PANELS if any(panel[0] in r and panel[1] in r for r in rows)]
    if not panels:
        raise PonderError("no measured points to plot: run the sweep first")
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
    dense = next((r for r in rows if r["method"] == "dense"), {})
    methods = sorted({r["method"] for r in rows} - {"dense"})
    for ax, (x, y, xlabel, ylabel) in zip(axes[0], panels, strict=True):
        for method in methods:
            points = sorted((r for r in rows if r["method"] == method and x in r and y in r), key=lambda r: r[x])
            ax.plot([r[x] for r in points], [r[y] for r in points], "o-", label=method)
        if y in dense:
            ax.axhline(dense[y], color="black", lw=0.8, ls="--", label=f"dense {dense[y]:.4g}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if y == "perplexity":
            ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    model = dense.get("model") or next((r["model"] for r in rows if "model" in r), "")
    fig.suptitle(f"{model}: quality vs compute")
    fig.tight_layout()
    paths = [directory / "pareto.png", directory / "pareto.svg"]
    for path in paths:
        fig.savefig(path, dpi=120)
    plt.close(fig)
    return paths


def results_table(rows: list[dict]) -> str:
    """A Markdown table of every point."""
    lines = [
        "| method | budget | perplexity | FFN compute | task acc | acc_norm | decode × | prefill × |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "skipped" in r and "perplexity" not in r:
            reason = r["skipped"].split(":")[0]  # the message's first clause; the JSON record keeps all of it
            lines.append(f"| {r['method']} | {r['budget']:.2f} | skipped ({reason}) | | | | | |")
            continue
        if "perplexity" not in r:
            continue
        decode = f"{r['decode_speedup']:.2f}" if "decode_speedup" in r else ""
        prefill = f"{r['prefill_speedup']:.2f}" if "prefill_speedup" in r else ""
        compute = r.get("ffn_compute", float("nan"))
        acc = f"{r['acc']:.4f} ± {r['acc_stderr']:.4f}" if "acc" in r else ""
        acc_norm = f"{r['acc_norm']:.4f}" if "acc_norm" in r else ""
        lines.append(
            f"| {r['method']} | {r['budget']:.2f} | {r['perplexity']:.2f} | {compute:.3f} | {acc} | {acc_norm} "
            f"| {decode} | {prefill} |"
        )
    return "\n".join(lines) + "\n"
