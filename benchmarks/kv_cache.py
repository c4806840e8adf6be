"""Quality, memory and decode speed of the compressed KV cache against the full cache, in one process per part.

Question: how much perplexity and passkey retrieval does each policy lose at KV budgets 0.5 and 0.25 (and KIVI
int8/int4), what does the cache weigh, and does decode get faster? Each part fits in 10 minutes on 2 cores with
the defaults; results merge into one JSON file as each configuration finishes (a rerun replaces its own entries).

- ppl: WikiText-2 test windows of 2,048 tokens; prefill 1,792, decode the last 256 one at a time through the cache,
  scoring those 256 (`ponder.kvcache.longctx`, as `ponder eval --kv-*`). `--only` picks configurations.
- passkey: a 5-digit number hidden at a random depth in repeated filler, then "What is the pass key?"; a trial is
  right when the greedy continuation (8 tokens) contains the number. Same seeds for every configuration.
- speed: decode tok/s at 512 and 2,048 tokens of context, full cache and each configuration interleaved
  (`ponder.kvcache.bench`, as `ponder bench --kv-*`), median of --repeats, and the cache's bytes after decoding.

    python benchmarks/kv_cache.py ppl --windows 2 --only full,window@0.5,window@0.25,h2o@0.5,h2o@0.25
    python benchmarks/kv_cache.py passkey --lengths 1024 --trials 20
    python benchmarks/kv_cache.py speed --contexts 512,2048 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

from ponder.data import load_text
from ponder.io import write_json_atomic
from ponder.kvcache import KVConfig
from ponder.kvcache.bench import kv_benchmark
from ponder.kvcache.longctx import kv_perplexity, new_cache
from ponder.models import DEFAULT_MODEL, load

RESULTS = Path(__file__).parent / "results" / "kv-cache.json"
QUALITY = ["full"] + [f"{p}@{b}" for p in ("window", "h2o", "snapkv", "d2o") for b in (0.5, 0.25)] + ["int8", "int4"]
PASSKEY = ["full", "window@0.25", "h2o@0.25", "snapkv@0.25", "d2o@0.25"]
SPEED = ["window@0.25", "h2o@0.25", "window@0.25+int4"]
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "


def config(name: str) -> KVConfig | None:
    """`full`, `int8`/`int4` (all tokens, quantized), or POLICY@BUDGET with an optional +intN."""
    if name == "full":
        return None
    if name.startswith("int"):
        return KVConfig(bits=int(name[3:]))
    spec, _, bits = name.partition("+")
    policy, _, budget = spec.partition("@")
    return KVConfig(budget=float(budget), policy=policy, bits=int(bits[3:]) if bits else 16)


def part_ppl(model, tokenizer, args):
    text = load_text("wikitext2")
    for name in args.only.split(",") if args.only else QUALITY:
        result = kv_perplexity(model, tokenizer, text, config(name), windows=args.windows, window_len=2048)
        print(f"{name:>18}: ppl {result.perplexity:.3f} ({result.tokens} tokens, {result.seconds:.0f} s)", flush=True)
        row = {"perplexity": result.perplexity, "nll": result.nll, "tokens": result.tokens, "windows": args.windows}
        yield "ppl", name, row | {"window_len": 2048, "decode": 256, "seconds": result.seconds}


def passkey_prompt(tokenizer, length: int, rng: random.Random) -> tuple[torch.Tensor, str]:
    """About `length` tokens: filler with the key line at a random depth, then the question."""
    key = str(rng.randint(10000, 99999))
    needle = f" The pass key is {key}. Remember it. {key} is the pass key. "
    question = " What is the pass key? The pass key is"
    budget = length - len(tokenizer(needle + question).input_ids)
    filler = tokenizer(FILLER * (length // 10), add_special_tokens=False).input_ids[:budget]
    depth = rng.randint(0, len(filler))
    before, after = tokenizer.decode(filler[:depth]), tokenizer.decode(filler[depth:])
    ids = tokenizer(before + needle + after + question, add_special_tokens=False).input_ids
    return torch.tensor([ids]), key


@torch.inference_mode()
def passkey_trial(model, tokenizer, ids: torch.Tensor, key: str, kv: KVConfig | None) -> bool:
    cache = new_cache(model, kv)
    token = model(ids, cache=cache, use_cache=True).logits[:, -1:].argmax(-1)
    out = [int(token)]
    for _ in range(7):
        token = model(token, cache=cache, use_cache=True).logits[:, -1:].argmax(-1)
        out.append(int(token))
    return key in tokenizer.decode(out)


def part_passkey(model, tokenizer, args):
    for length in map(int, args.lengths.split(",")):
        rng = random.Random(length)
        prompts = [passkey_prompt(tokenizer, length, rng) for _ in range(args.trials)]
        for name in args.only.split(",") if args.only else PASSKEY:
            start = time.perf_counter()
            right = sum(passkey_trial(model, tokenizer, ids, key, config(name)) for ids, key in prompts)
            print(f"{name:>14} @ {length}: {right}/{args.trials} ({time.perf_counter() - start:.0f} s)", flush=True)
            yield "passkey", f"{name}/{length}", {"accuracy": right / args.trials, "trials": args.trials}


def part_speed(model, tokenizer, args):
    for context in map(int, args.contexts.split(",")):
        for name in args.only.split(",") if args.only else SPEED:
            result = kv_benchmark(
                model, tokenizer, config(name), prompt_tokens=context, new_tokens=args.new_tokens,
                repeats=args.repeats, progress=False,
            )  # fmt: skip
            kv, full = result["kv"], result["full"]
            megabytes = kv["cache_bytes"] / 1e6, full["cache_bytes"] / 1e6
            print(
                f"{name:>18} @ {context}: {kv['decode_tok_s']:.1f} tok/s vs full {full['decode_tok_s']:.1f} "
                f"(x{kv['decode_speedup']:.2f}); cache {megabytes[0]:.1f} MB vs {megabytes[1]:.1f} MB",
                flush=True,
            )
            yield "speed", f"{name}/{context}", result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("part", choices=("ppl", "passkey", "speed"))
    parser.add_argument("--only", default=None, help="comma-separated configurations (full, int8, h2o@0.25, ...)")
    parser.add_argument("--windows", type=int, default=2)
    parser.add_argument("--lengths", default="1024,2048")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--contexts", default="512,2048")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    model, tokenizer = load(DEFAULT_MODEL)
    part = {"ppl": part_ppl, "passkey": part_passkey, "speed": part_speed}[args.part]
    for section, key, row in part(model, tokenizer, args):  # saved as each finishes: a killed part keeps its rows
        results = json.loads(args.output.read_text()) if args.output.exists() else {}
        results.setdefault(section, {})[key] = row
        results["model"], results["threads"] = DEFAULT_MODEL, torch.get_num_threads()
        write_json_atomic(args.output, results)


if __name__ == "__main__":
    main()
