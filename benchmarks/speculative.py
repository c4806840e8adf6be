"""Does speculative decoding make the default model's answers faster, and why (or why not)?

Prompts: 10 grounded ones (summarize or rewrite a WikiText-2 *validation* paragraph: answers that reuse their
context) and 10 open ones (PIQA validation goals: "how do I ..."), in the chat template. For every weight format and
every prompt, the dense greedy decode and each speculative configuration run back to back, `--rounds` times
(interleaved), stopping at EOS or `--new-tokens`; decode tokens/s counts the tokens after the first over the time
from the first to the last (prefill excluded; the prefill is the same for both). The speed-up is the ratio of
summed decode times over the prompt set (same tokens by construction, checked), median over rounds. Identity: one
more run per prompt with EOS ignored, `--new-tokens` tokens, compared token for token with the dense decode.

The cost model beside it: the median time of a pass over T = 1..9 tokens (the verifier's cost of T-1 drafts), the
time of a layer-subset draft token, and each configuration's acceptance (drafts kept / drafted) and tokens per pass.

    python benchmarks/speculative.py [--formats q4_1,q8_0,fp32] [--rounds 3] [--new-tokens 128] [--out DIR]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from ponder.inference.speculative import speculative_decoder
from ponder.io import write_json_atomic, write_text_atomic
from ponder.models.load import load_tokenizer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MODEL = "smollm2-135m"
QUANT_CONFIGS = {  # name -> (draft, drafts a pass or None for the measured choice)
    "lookup": ("lookup", None),
    "lookup k=2": ("lookup", 2),
    "lookup k=4": ("lookup", 4),
    "layers 0-19": ("layers:0-19", None),
    "layers 0-19 k=2": ("layers:0-19", 2),
}
FP32_CONFIGS = {"lookup": ("lookup", None), "lookup k=2": ("lookup", 2)}


def prompts(data: Path) -> list[tuple[str, str]]:
    """(kind, text) of the 20 prompts: paragraphs of the validation split (never the test split) and PIQA goals."""
    lines = (data / "wikitext2-valid-tokenized.txt").read_text().splitlines()
    paragraphs = [line.strip() for line in lines if 400 < len(line.strip()) < 1400][:10]
    asks = ["Summarize this paragraph in detail:", "Rewrite this paragraph in plain English:"]
    grounded = [("grounded", f"{asks[i % 2]}\n\n{p}") for i, p in enumerate(paragraphs)]
    goals = [json.loads(line)["goal"] for line in (data / "piqa-valid.jsonl").read_text().splitlines()[:10]]
    return grounded + [("open", f"Explain step by step: {goal}") for goal in goals]


def decoder_for(fmt: str, threads: int, max_len: int):
    if fmt == "fp32":
        from ponder.adaptive import load
        from ponder.inference import LeanDecoder

        torch.set_num_threads(threads)
        model, _ = load(MODEL, threads=threads)
        return LeanDecoder(model, max_len=max_len)
    from ponder.quant import QuantDecoder

    return QuantDecoder(MODEL, weights=None if fmt == "q4_1" else fmt, threads=threads, max_len=max_len)


def timed_decode(generate, ids: torch.Tensor, new_tokens: int, eos) -> tuple[torch.Tensor, int, float]:
    """(tokens, decoded tokens after the first, seconds from the first token to the last)."""
    marks: list[float] = []
    out = generate(ids, new_tokens, eos_token_id=eos, on_token=lambda _: marks.append(time.perf_counter()))
    return out, len(marks) - 1, marks[-1] - marks[0]


def pass_costs(decoder, fmt: str, repeats: int = 15) -> dict[int, float]:
    """Median seconds of one verifying pass over T tokens after a 200-token context."""
    from ponder.inference.speculative import target_for

    target, costs = target_for(decoder), {}
    for T in range(1, 10):
        times = []
        for _ in range(repeats):
            if fmt == "fp32":
                decoder.runner.reset(1)
                decoder.runner.forward(torch.arange(100, 300)[None])
            else:
                decoder.reset()
                decoder.forward(torch.arange(100, 300))
            start = time.perf_counter()
            target.append(list(range(5, 5 + T)))
            times.append(time.perf_counter() - start)
        costs[T] = statistics.median(times)
    return costs


def layer_draft_cost(decoder, repeats: int = 30) -> float:
    spec = speculative_decoder(decoder, "layers:0-19")
    decoder.reset()
    decoder.forward(torch.arange(100, 300))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        spec.draft.propose([5], spec.target, 1)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_format(fmt: str, args: argparse.Namespace, items, tokenizer) -> dict:
    encoded = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"]
        for _, text in items
    ]
    decoder = decoder_for(fmt, args.threads, max(ids.shape[1] for ids in encoded) + args.new_tokens + 16)
    configs = FP32_CONFIGS if fmt == "fp32" else QUANT_CONFIGS
    spec = {name: speculative_decoder(decoder, draft, k) for name, (draft, k) in configs.items()}
    eos = tokenizer.eos_token_id
    names = ["dense", *spec]
    rounds = []  # per round: name -> per prompt (tokens, seconds)
    stats = {name: {"drafted": 0, "accepted": 0, "emitted": 0, "verifies": 0} for name in spec}
    timed_decode(decoder.generate, encoded[0], 8, eos)  # warm-up
    for r in range(args.rounds):
        runs = {name: [] for name in names}
        for ids in encoded:
            reference = None
            for name in names:
                generate = decoder.generate if name == "dense" else spec[name].generate
                out, n, seconds = timed_decode(generate, ids, args.new_tokens, eos)
                runs[name].append((n, seconds))
                if name == "dense":
                    reference = out
                else:
                    if not torch.equal(out, reference):
                        raise SystemExit(f"{fmt} {name}: tokens differ from dense decoding")
                    if r == 0:
                        for key in stats[name]:
                            stats[name][key] += spec[name].stats.as_dict()[key]
        rounds.append(runs)
        print(f"{fmt}: round {r + 1}/{args.rounds}", file=sys.stderr, flush=True)
    identical = {name: 0 for name in spec}
    for ids in encoded:  # EOS ignored: every prompt's full `new_tokens`
        reference = decoder.generate(ids, args.new_tokens)
        for name in spec:
            identical[name] += bool(torch.equal(spec[name].generate(ids, args.new_tokens), reference))

    def rate(name: str, r: dict, kinds: set[str]) -> float:
        pairs = [p for p, (kind, _) in zip(r[name], items, strict=True) if kind in kinds]
        return sum(n for n, _ in pairs) / sum(s for _, s in pairs)

    result = {"format": fmt, "prompts": len(items), "configs": {}}
    for name in names:
        row = {}
        for label, kinds in (("all", {"grounded", "open"}), ("grounded", {"grounded"}), ("open", {"open"})):
            rates = [rate(name, r, kinds) for r in rounds]
            speedups = [rate(name, r, kinds) / rate("dense", r, kinds) for r in rounds]
            row[label] = {"decode_tok_s": statistics.median(rates), "speedup": statistics.median(speedups)}
        if name != "dense":
            s = stats[name]
            row |= {
                "acceptance_rate": s["accepted"] / s["drafted"] if s["drafted"] else 0.0,
                "tokens_per_pass": s["emitted"] / s["verifies"],
                "identical_prompts": identical[name],
                "draft": configs[name][0],
                "k": configs[name][1],
            }
        row["raw"] = [r[name] for r in rounds]
        result["configs"][name] = row
    result["mean_tokens"] = statistics.mean(n + 1 for n, _ in rounds[0]["dense"])
    result["pass_seconds"] = pass_costs(decoder, fmt)
    if fmt != "fp32":
        result["layer_draft_seconds"] = layer_draft_cost(decoder)
    return result


def markdown(results: list[dict], command: str, started: dict) -> str:
    lines = [
        f"`{command}`",
        "",
        f"{started['date']}, {started['cpu']}, {started['threads']} threads, load average {started['load']:.2f} at "
        f"the start. {results[0]['prompts']} prompts (10 grounded, 10 open), greedy, EOS or {started['new_tokens']} "
        f"tokens; decode tok/s after the first token, median of {started['rounds']} interleaved rounds.",
        "",
    ]
    for res in results:
        dense = res["configs"]["dense"]["all"]["decode_tok_s"]
        lines += [
            f"**{res['format']}** (dense {dense:.1f} tok/s over all prompts, {res['mean_tokens']:.0f} tokens an "
            "answer on average)",
            "",
            "| configuration | speed-up, all | grounded | open | acceptance | tokens a pass | same, EOS ignored |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, row in res["configs"].items():
            if name == "dense":
                continue
            lines.append(
                f"| {name} | {row['all']['speedup']:.2f}× | {row['grounded']['speedup']:.2f}× | "
                f"{row['open']['speedup']:.2f}× | {row['acceptance_rate']:.2f} | {row['tokens_per_pass']:.2f} | "
                f"{row['identical_prompts']}/{res['prompts']} |"
            )
        one = res["pass_seconds"][1]
        costs = ", ".join(f"T={t}: {s / one:.2f}" for t, s in res["pass_seconds"].items())
        lines += ["", f"Pass cost relative to one token ({one * 1e3:.2f} ms): {costs}."]
        if "layer_draft_seconds" in res:
            lines.append(f"A layers 0-19 draft token: {res['layer_draft_seconds'] / one:.2f} of a one-token pass.")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--formats", default="q4_1,q8_0,fp32")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=Path("runs/speculative"))
    args = parser.parse_args()
    from ponder.timing import cpu_name

    started = {"date": datetime.date.today().isoformat(), "cpu": cpu_name(), "threads": args.threads,
               "load": os.getloadavg()[0], "rounds": args.rounds, "new_tokens": args.new_tokens}  # fmt: skip
    tokenizer = load_tokenizer(MODEL)
    items = prompts(args.data)
    results = [run_format(fmt, args, items, tokenizer) for fmt in args.formats.split(",")]
    command = "python benchmarks/speculative.py " + " ".join(sys.argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "speculative.json", {"command": command, **started, "results": results})
    text = markdown(results, command, started)
    write_text_atomic(args.out / "speculative.md", text)
    print(text)


if __name__ == "__main__":
    main()
