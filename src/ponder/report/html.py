"""One self-contained HTML page per sweep: table, Pareto plot, and where compute went token by token.

No network assets: the plot's SVG, the styles and the hover script are inline, and the data the page shows are
embedded as JSON, so the file can be mailed or archived. Token shading is the token's mean fraction of dense FFN
compute over layers, recorded by `ponder.stats.ComputeTrace` (the same counts as every other compute number).
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ponder.adaptive import get_budget
from ponder.data import first_tokens
from ponder.errors import DataError
from ponder.state import method_name
from ponder.stats import ComputeTrace


@dataclass
class Heatmap:
    """Compute per token of one text under one model and budget."""

    method: str
    budget: float
    tokens: list[str]
    per_layer: list[list[float]]  # [tokens][layers]

    @property
    def mean(self) -> list[float]:
        return [sum(row) / len(row) for row in self.per_layer]

    @property
    def layer_mean(self) -> list[float]:
        return [sum(col) / len(col) for col in zip(*self.per_layer, strict=True)]


@torch.inference_mode()
def compute_heatmap(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, text: str, *, max_tokens: int = 200
) -> Heatmap:
    """Run `text` (its first `max_tokens` tokens) once and record each token's compute per layer."""
    ids = first_tokens(tokenizer, text, max_tokens)
    if not ids:
        raise DataError("the heatmap text is empty: give some text")
    with ComputeTrace(model) as trace:
        model(torch.tensor([ids]))
        fractions = trace.pop()  # [T, layers]
    pieces = [tokenizer.decode([i]) for i in ids]
    method = method_name(model)
    return Heatmap(method, get_budget(model), pieces, fractions.tolist())


STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { padding: .25rem .6rem; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.plot svg { max-width: 100%; height: auto; }
.heatmap { line-height: 2; white-space: pre-wrap; border: 1px solid #ddd; padding: .75rem; }
.tok { border-radius: 3px; padding: 1px 0; cursor: default; }
.legend span { display: inline-block; width: 2.2rem; text-align: center; font-size: 12px; }
.bars { display: flex; align-items: flex-end; gap: 2px; height: 120px; border-bottom: 1px solid #999; }
.bar { background: #3b6ea8; flex: 1; }
#detail { min-height: 3.2em; font-size: 12px; color: #444; }
.note { color: #666; font-size: 12px; }
"""

SCRIPT = """
const detail = document.getElementById("detail");
for (const tok of document.querySelectorAll(".tok")) {
  tok.addEventListener("mouseenter", () => {
    const layers = JSON.parse(tok.dataset.layers).map(v => v.toFixed(2)).join(" ");
    detail.textContent = `token ${tok.dataset.index} ${JSON.stringify(tok.textContent)}: mean `
      + `${Number(tok.dataset.compute).toFixed(3)} of dense FFN compute; per layer: ${layers}`;
  });
}
"""


def shade(fraction: float, low: float = 0.0, high: float = 1.0) -> str:
    """White at `low` (default: no FFN compute) to deep red at `high` (default: dense)."""
    f = min(max((fraction - low) / (high - low), 0.0), 1.0) if high > low else 1.0
    return f"rgb(255,{round(255 - 190 * f)},{round(255 - 215 * f)})"


def _table(rows: list[dict]) -> str:
    columns = [
        ("method", "method", "{}"),
        ("budget", "budget", "{:.2f}"),
        ("perplexity", "perplexity", "{:.2f}"),
        ("ffn_compute", "FFN compute", "{:.3f}"),
        ("acc", "task acc", "{:.4f}"),
        ("decode_speedup", "decode ×", "{:.2f}"),
        ("prefill_speedup", "prefill ×", "{:.2f}"),
    ]
    head = "".join(f"<th>{title}</th>" for _, title, _ in columns)
    body = []
    for row in rows:
        if "skipped" in row and "perplexity" not in row:
            continue
        cells = "".join(
            f"<td>{html.escape(fmt.format(row[key]))}</td>" if key in row else "<td></td>" for key, _, fmt in columns
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _heatmap_html(heatmap: Heatmap) -> str:
    means = heatmap.mean
    low, high = min(means), max(means)  # shades span this text's range; the legend gives the values
    spans = []
    for index, (piece, layers, mean) in enumerate(zip(heatmap.tokens, heatmap.per_layer, means, strict=True)):
        spans.append(
            f'<span class="tok" data-index="{index}" data-compute="{mean:.6f}" '
            f"data-layers='{json.dumps([round(v, 4) for v in layers])}' "
            f'style="background:{shade(mean, low, high)}">{html.escape(piece)}</span>'
        )
    stops = [low + (high - low) * i / 4 for i in range(5)]
    legend = "".join(f'<span style="background:{shade(v, low, high)}">{v:.2f}</span>' for v in stops)
    layer_mean = heatmap.layer_mean
    bars = "".join(
        f'<div class="bar" title="layer {i}: {v:.3f}" style="height:{100 * min(v, 1):.1f}%"></div>'
        for i, v in enumerate(layer_mean)
    )
    histogram = [0] * 10
    for m in means:
        histogram[min(int(m * 10), 9)] += 1
    skipped = sum(1 for row in heatmap.per_layer for v in row if v == 0.0) / max(1, sum(map(len, heatmap.per_layer)))
    return f"""
<h2>Where compute went: {html.escape(heatmap.method)} at budget {heatmap.budget:.2f}</h2>
<p class="legend">token shade = mean fraction of dense FFN compute over layers (this text's range): {legend}
 &nbsp; mean over tokens <b id="mean-compute">{sum(means) / len(means):.3f}</b> ({len(means)} tokens)</p>
<div class="heatmap" id="heatmap">{"".join(spans)}</div>
<p id="detail">Hover a token to see its compute per layer.</p>
<h2>Compute per layer (mean over tokens)</h2>
<div class="bars" id="layer-bars">{bars}</div>
<p class="note">layers 0..{len(layer_mean) - 1}, left to right; full height = dense.</p>
<h2>Policy statistics</h2>
<table id="policy-stats"><tbody>
<tr><td>tokens by mean compute (0-0.1, 0.1-0.2, ..., 0.9-1.0)</td><td>{" ".join(map(str, histogram))}</td></tr>
<tr><td>(token, layer) pairs that skipped the FFN entirely</td><td>{100 * skipped:.1f} %</td></tr>
<tr><td>spread of token compute (min / median / max)</td>
<td>{min(means):.3f} / {sorted(means)[len(means) // 2]:.3f} / {max(means):.3f}</td></tr>
</tbody></table>"""


def render_report(rows: list[dict], *, plot_svg: str | None, heatmap: Heatmap | None, title: str) -> str:
    """The whole page as one string."""
    plot = ""
    if plot_svg:
        svg = plot_svg[plot_svg.find("<svg") :]  # drop the XML prologue: the SVG is inlined
        plot = f'<h2>Quality vs compute</h2><div class="plot">{svg}</div>'
    data = {"rows": rows, "heatmap": asdict(heatmap) if heatmap else None}
    payload = json.dumps(data).replace("</", "<\\/")  # never close the script element early
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{STYLE}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<h2>Results</h2>
{_table(rows)}
{plot}
{_heatmap_html(heatmap) if heatmap else ""}
<script type="application/json" id="ponder-data">{payload}</script>
<script>{SCRIPT}</script>
</body></html>
"""


def write_report(html_text: str, path: str | Path) -> Path:
    from ponder.io import write_text_atomic

    write_text_atomic(path, html_text)
    return Path(path)
