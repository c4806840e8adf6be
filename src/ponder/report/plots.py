"""Pareto plots of quality against compute (and measured speed-up), one line per method."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402


def pareto_plot(rows: list[dict], directory: str | Path) -> list[Path]:
    """Write pareto.png and pareto.svg: perplexity vs achieved FFN compute, and vs decode speed-up if timed."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    measured = [r for r in rows if "perplexity" in r]
    timed = [r for r in rows if "decode_speedup" in r and "perplexity" in r]
    panels = 2 if timed else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.5), squeeze=False)
    dense = next((r for r in measured if r["method"] == "dense"), None)
    for method in sorted({r["method"] for r in measured} - {"dense"}):
        points = sorted((r for r in measured if r["method"] == method), key=lambda r: r["ffn_compute"])
        axes[0, 0].plot([r["ffn_compute"] for r in points], [r["perplexity"] for r in points], "o-", label=method)
        if timed:
            speed = sorted((r for r in timed if r["method"] == method), key=lambda r: r["decode_speedup"])
            axes[0, 1].plot([r["decode_speedup"] for r in speed], [r["perplexity"] for r in speed], "o-", label=method)
    labels = ["achieved FFN compute (fraction of dense FLOPs)", "decode speed-up vs dense"]
    for ax, xlabel in zip(axes[0], labels[:panels], strict=True):
        if dense:
            ax.axhline(dense["perplexity"], color="black", lw=0.8, ls="--", label=f"dense {dense['perplexity']:.2f}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("perplexity (lower is better)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    model = (dense or measured[0])["model"] if measured else ""
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
        "| method | budget | perplexity | FFN compute | decode × | prefill × |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "skipped" in r and "perplexity" not in r:
            reason = r["skipped"].split(":")[0]  # the message's first clause; the JSON record keeps all of it
            lines.append(f"| {r['method']} | {r['budget']:.2f} | skipped ({reason}) | | | |")
            continue
        if "perplexity" not in r:
            continue
        decode = f"{r['decode_speedup']:.2f}" if "decode_speedup" in r else ""
        prefill = f"{r['prefill_speedup']:.2f}" if "prefill_speedup" in r else ""
        compute = r.get("ffn_compute", float("nan"))
        lines.append(
            f"| {r['method']} | {r['budget']:.2f} | {r['perplexity']:.2f} | {compute:.3f} | {decode} | {prefill} |"
        )
    return "\n".join(lines) + "\n"
