"""The quality-vs-speed front of adaptive compute on quantized weights against llama.cpp's quantization ladder.

One sitting, same threads. Speed: paired rounds; each round decodes `--new-tokens` greedy tokens after a 1-token
prompt (llama-bench's tg) for every ponder format x mode x budget (a converted `--dir`, `AdaptiveQuantDecoder`),
then runs `llama-bench -r 1 -p 0 -n N` for every llama.cpp format; medians, and per-round ratios to the dense path
of the same format and to llama.cpp Q4_1. FFN alone: one layer's FFN through `pq_ffn` in count mode (its compute
does not depend on the input), against the dense FFN, interleaved. Perplexity: ponder's eval protocol (windows of
`--window-len` tokens, every prediction scored) for every ponder point, the fp32 method at the same budgets
(`ponder.adaptive`, the lean path's modules), the neuron-major requantization alone (every neuron through the sparse
kind), and `llama-perplexity` in its strided every-token mode on the same text and windows. llama.cpp is built and
its ladder made by `llamacpp_peer.py` (cached). Output: JSON, markdown, and one Pareto plot (PNG and SVG).

    PYTHONPATH=src python benchmarks/quant_adaptive_front.py --dir runs/cats --out runs/front
        [--formats q8_0,q4_1,q4_0] [--budgets 1,0.75,0.5,0.4] [--modes threshold,count]
        [--llama-formats F16,Q8_0,Q5_0,Q4_1,Q4_0,Q3_K,Q2_K]
        [--rounds 5] [--threads 2] [--windows 8] [--window-len 1024]
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import llamacpp_peer as peer  # noqa: E402

from ponder.data import load_text  # noqa: E402
from ponder.eval.perplexity import decoder_perplexity  # noqa: E402
from ponder.io import write_json_atomic, write_text_atomic  # noqa: E402
from ponder.models.load import _dequantize_gguf, load_tokenizer, resolve  # noqa: E402
from ponder.quant import load_model  # noqa: E402
from ponder.quant.adaptive import AdaptiveQuantDecoder, ffn_call, read_converted  # noqa: E402
from ponder.timing import cpu_name  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", type=Path, required=True, help="a converted directory (ponder convert)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--formats", default="q8_0,q4_1,q4_0")
    p.add_argument("--budgets", default="1,0.75,0.5,0.4")
    p.add_argument("--modes", default="threshold,count")
    p.add_argument("--llama-formats", default="F16,Q8_0,Q5_0,Q4_1,Q4_0,Q3_K,Q2_K")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--windows", type=int, default=8)
    p.add_argument("--window-len", type=int, default=1024)
    p.add_argument("--data", default="wikitext2")
    p.add_argument("--skip-perplexity", action="store_true")
    p.add_argument("--lock", default="/work/quiet.lock", help="a file held while timing ('' for none)")
    return p.parse_args()


def split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def llama_files(args: argparse.Namespace, model: str) -> tuple[Path, dict[str, dict]]:
    home = peer.llama_home(peer.SDIST_VERSION)
    source = peer.fetch_source(home, peer.SDIST_VERSION, None)
    peer.build(home, source, 2)
    kind, where = resolve(model)
    shipped = Path(where) if kind == "gguf" else None
    hf_dir = _dequantize_gguf(shipped) if shipped else Path(where)
    return home, peer.ladder(home, source, hf_dir, shipped, split(args.llama_formats))


def ffn_alone(decoder: AdaptiveQuantDecoder, budget: float, rounds: int, calls: int = 300) -> float:
    """Median over rounds of dense / sparse seconds of one layer's FFN (count mode), interleaved."""
    x = torch.randn(1, decoder.hidden, generator=torch.Generator().manual_seed(0))
    ratios = []
    for _ in range(rounds):
        seconds = {}
        for b in (1.0, budget):
            decoder.set_budget(b)
            ffn_call(decoder, 0, x)
            start = time.perf_counter()
            for _ in range(calls):
                ffn_call(decoder, 0, x)
            seconds[b] = time.perf_counter() - start
        ratios.append(seconds[1.0] / seconds[budget])
    return statistics.median(ratios)


def timed(args, cases, decoders, budgets, prompt) -> tuple[dict, dict, list, dict]:
    """Warm-up, compute per point, `rounds` paired rounds (order reversed every other round), FFN alone."""
    for fn in cases.values():
        fn()
    compute = {}
    for (f, m), d in decoders.items():
        for b in (b for b in budgets if f"ponder:{f}:{m}@{b}" in cases):
            d.set_budget(b)
            d.reset_compute()
            d.generate(prompt, args.new_tokens)
            compute[f"ponder:{f}:{m}@{b}"] = d.ffn_compute
    samples: dict[str, list[float]] = {name: [] for name in cases}
    loads = []
    for index in range(args.rounds):
        order = list(cases) if index % 2 == 0 else list(reversed(cases))
        for name in order:
            samples[name].append(cases[name]())
        loads.append(os.getloadavg()[0])
        print(f"round {index + 1}/{args.rounds} load {loads[-1]:.2f}", flush=True)
    ffn = {f"{f}:{m}@{b}": ffn_alone(d, b, args.rounds) for (f, m), d in decoders.items() if m == "count"
           for b in budgets if b < 1.0}  # fmt: skip
    return samples, compute, loads, ffn


def main() -> None:
    args = parse_args()
    started = datetime.datetime.now(datetime.UTC)
    command = shlex.join(["python", *sys.argv])
    config, _ = read_converted(args.dir)
    base = config["base_model"]
    formats, budgets, modes = split(args.formats), [float(b) for b in split(args.budgets)], split(args.modes)
    home, files = llama_files(args, base)
    tokenizer = load_tokenizer(base)
    decoders = {}
    for fmt in formats:
        model = load_model(base, fmt)
        for mode in modes:
            decoders[fmt, mode] = AdaptiveQuantDecoder(args.dir, base=model, mode=mode, threads=args.threads,
                                                       max_len=max(args.window_len, args.new_tokens + 1))  # fmt: skip
    prompt = tokenizer("The", return_tensors="pt", add_special_tokens=False).input_ids[:, :1]

    # --- speed: paired rounds ---
    def ponder_case(decoder: AdaptiveQuantDecoder, budget: float):
        def run() -> float:
            decoder.set_budget(budget)
            start = time.perf_counter()
            decoder.generate(prompt, args.new_tokens)
            return args.new_tokens / (time.perf_counter() - start)

        return run

    def llama_case(path: str):
        bench = [str(home / "build" / "bin" / "llama-bench"), "-m", path, "-t", str(args.threads), "-r", "1"]
        bench += ["-p", "0", "-n", str(args.new_tokens), "-o", "json"]
        return lambda: peer.llama_bench(bench)["decode"]

    # count mode at budget 1 is the dense path, as threshold mode's: timed once, under threshold
    cases = {f"ponder:{f}:{m}@{b}": ponder_case(d, b) for (f, m), d in decoders.items() for b in budgets
             if not (m == "count" and b == 1.0)}  # fmt: skip
    cases |= {f"llama.cpp:{name}": llama_case(entry["path"]) for name, entry in files.items()}
    lock = Path(args.lock) if args.lock else None
    while lock is not None and lock.exists():  # someone else is timing
        time.sleep(15)
    if lock is not None:
        lock.touch()
    try:
        samples, compute, loads, ffn = timed(args, cases, decoders, budgets, prompt)
    finally:
        if lock is not None:
            lock.unlink(missing_ok=True)

    def paired(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(samples[a], samples[b], strict=True))

    speed = {name: {"decode_tok_s": statistics.median(v), "min": min(v), "max": max(v), "samples": v}
             for name, v in samples.items()}  # fmt: skip
    for (f, m), _ in decoders.items():
        for b in budgets:
            name = f"ponder:{f}:{m}@{b}"
            if name not in speed:
                continue
            speed[name] |= {"ffn_compute": compute[name], "decode_speedup": paired(name, f"ponder:{f}:threshold@1.0")}
            if "llama.cpp:Q4_1" in samples:
                speed[name]["vs_llama_q4_1"] = paired(name, "llama.cpp:Q4_1")

    # --- perplexity ---
    ppl: dict[str, float] = {}
    if not args.skip_perplexity:
        text = load_text(args.data)
        text_file = args.out / "eval-text.txt"
        args.out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(text_file, text)
        for (f, m), d in decoders.items():
            for b in budgets:
                if m == "count" and b == 1.0:
                    continue  # the dense path, as threshold@1.0
                d.set_budget(b)
                ppl[f"ponder:{f}:{m}@{b}"] = decoder_perplexity(
                    d, tokenizer, text, windows=args.windows, window_len=args.window_len, progress=False
                ).perplexity
                print(f"ppl ponder:{f}:{m}@{b} {ppl[f'ponder:{f}:{m}@{b}']:.3f}", flush=True)
            if m == "count":  # every neuron through the sparse kind: the neuron-major down's requantization alone
                d.set_budget(0.99)
                for layer in d._layers:
                    layer.top_k = d.ffn
                ppl[f"ponder:{f}:requantized-down"] = decoder_perplexity(
                    d, tokenizer, text, windows=args.windows, window_len=args.window_len, progress=False
                ).perplexity
        from ponder.adaptive import load, set_budget
        from ponder.eval import perplexity

        fp32, fp32_tokenizer = load(str(args.dir), threads=args.threads)
        for b in budgets:
            set_budget(fp32, b)
            ppl[f"ponder:fp32:threshold@{b}"] = perplexity(
                fp32, fp32_tokenizer, text, windows=args.windows, window_len=args.window_len, progress=False
            ).perplexity
            print(f"ppl fp32@{b} {ppl[f'ponder:fp32:threshold@{b}']:.3f}", flush=True)
        settings = argparse.Namespace(threads=args.threads, windows=args.windows, window_len=args.window_len)
        for name, entry in files.items():
            ppl[f"llama.cpp:{name}"] = peer.llama_perplexity(
                home, Path(entry["path"]), text_file, settings, all_tokens=True
            )["perplexity"]
    result = {
        "command": command,
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "loads": loads},
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "speed": speed,
        "ffn_alone_speedup": ffn,
        "perplexity": ppl,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "front.json", result)
    write_text_atomic(args.out / "front.md", markdown(result))
    plot(result, args.out / "front")
    print(markdown(result))


def markdown(result: dict) -> str:
    header = "| point | decode tok/s [min-max] | x dense of format | x llama.cpp Q4_1 | FFN compute | perplexity |"
    machine = f"{result['machine']['cpu']}, loads per round {result['machine']['loads']}"
    lines = [f"`{result['command']}`", "", machine, "", header, "|---|---|---|---|---|---|"]
    ppl = result["perplexity"]
    for name, row in result["speed"].items():
        cells = [f"{row['decode_tok_s']:.1f} [{row['min']:.1f}-{row['max']:.1f}]"]
        cells += [f"{row[k]:.3f}" if k in row else "" for k in ("decode_speedup", "vs_llama_q4_1", "ffn_compute")]
        dense = name.replace(":count@1.0", ":threshold@1.0")
        cells.append(f"{ppl[dense]:.3f}" if dense in ppl else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    extra = {k: v for k, v in ppl.items() if k not in result["speed"] and not k.endswith("count@1.0")}
    if extra:
        lines += ["", "| perplexity only | value |", "|---|---|"] + [f"| {k} | {v:.3f} |" for k, v in extra.items()]
    if result["ffn_alone_speedup"]:
        lines += ["", "| FFN alone (one layer, count mode) | x dense |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in result["ffn_alone_speedup"].items()]
    return "\n".join(lines) + "\n"


def plot(result: dict, stem: Path) -> None:
    """Perplexity against decode tok/s: ponder's formats x budgets (one line per format and mode) and llama.cpp's
    ladder; lower right is better."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ppl, speed = result["perplexity"], result["speed"]
    if not ppl:
        return
    fig, ax = plt.subplots(figsize=(8, 5.5))
    series: dict[str, list[tuple[float, float, str]]] = {}
    for name, row in speed.items():
        key = name.replace(":count@1.0", ":threshold@1.0")
        if key not in ppl:
            continue
        label = name.split("@")[0] if name.startswith("ponder") else "llama.cpp ladder"
        series.setdefault(label, []).append((row["decode_tok_s"], ppl[key], name.split("@")[-1].split(":")[-1]))
    for label, points in series.items():
        points.sort()
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        style = "s--" if label.startswith("llama") else "o-"
        ax.plot(xs, ys, style, label=label)
        for x, y, tag in points:
            ax.annotate(tag, (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
    ax.set_xlabel("decode tokens/s (higher is better)")
    ax.set_ylabel("perplexity (lower is better)")
    ax.set_title("SmolLM2-135M: adaptive compute on quantized weights vs llama.cpp's ladder")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    for suffix in (".png", ".svg"):
        fig.savefig(str(stem) + suffix, dpi=130)
    plt.close(fig)


if __name__ == "__main__":
    main()
