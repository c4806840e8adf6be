"""Latency and throughput of `ponder serve` under 1, 4 and 16 concurrent clients, beside llama.cpp's llama-server.

Each server runs in its own process on the same GGUF at the same thread count; every round runs each client count
against each server back to back (interleaved), so drift on a shared machine falls on both alike. A client sends
its requests one after another (the same prompt, `--tokens` greedy tokens, no early stop where the server allows:
`ignore_eos` for llama-server, which ponder ignores, so ponder's counts come from `usage`). Latency is per request,
p50 and p95 over all rounds; throughput is completion tokens per wall-clock second of a round, median over rounds.

llama-server is looked for under $PONDER_CACHE/llama.cpp/*/build/bin (the build `llamacpp_peer.py` makes turns it
off) or given with --llama-server; without one, ponder is measured alone.

    python benchmarks/serve_load.py [--model smollm2-135m] [--weights q4_1] [--clients 1,4,16] [--rounds 5]
        [--tokens 32] [--threads 2] [--out benchmarks/results/serve-load.json]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from ponder.io import write_json_atomic
from ponder.models.load import cache_root, resolve
from ponder.timing import cpu_name

PROMPT = "The history of the river begins in the mountains, where"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_llama_server() -> Path | None:
    found = sorted((cache_root() / "llama.cpp").glob("*/build/bin/llama-server"))
    return found[-1] if found else None


def start(command: list[str], port: int, log: Path) -> subprocess.Popen:
    """A server process, once /health answers 200."""
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{shlex.join(command)} exited {process.returncode}: see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    process.kill()
    raise SystemExit(f"{shlex.join(command)} did not answer /health in 300 s")


async def one_round(url: str, model: str, clients: int, requests: int, tokens: int) -> dict:
    """`clients` concurrent clients of `requests` requests each: latencies, tokens and the round's seconds."""
    body = {"model": model, "prompt": PROMPT, "max_tokens": tokens, "temperature": 0, "ignore_eos": True}
    latencies: list[float] = []
    produced: list[int] = []
    statuses: list[int] = []

    async def client(http: httpx.AsyncClient) -> None:
        for _ in range(requests):
            start = time.perf_counter()
            response = await http.post("/v1/completions", json=body)
            latencies.append(time.perf_counter() - start)
            statuses.append(response.status_code)
            if response.status_code == 200:
                produced.append(response.json()["usage"]["completion_tokens"])

    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        seconds = time.perf_counter() - start
    return {"latencies": latencies, "tokens": sum(produced), "seconds": seconds, "statuses": statuses}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="a GGUF file or an alias that resolves to one")
    parser.add_argument("--weights", default="q4_1", help="ponder's --weights (the GGUF's own format)")
    parser.add_argument("--clients", default="1,4,16", help="comma-separated concurrent client counts")
    parser.add_argument("--requests", type=int, default=16, help="requests per client count and round (default 16)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=32, help="completion tokens per request (default 32)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--llama-server", type=Path, default=None, help="llama-server binary (default: looked for)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/serve-load.json"))
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    kind, gguf = resolve(args.model)
    if kind != "gguf":
        raise SystemExit(f"{args.model} is not a GGUF: llama-server needs one, give a .gguf or its alias")
    counts = [int(c) for c in args.clients.split(",")]
    logs = cache_root() / "serve-load-logs"  # the servers' output, for when one fails to start
    logs.mkdir(parents=True, exist_ok=True)
    servers: dict[str, tuple[list[str], int, str]] = {}
    port = free_port()
    ponder = [sys.executable, "-m", "ponder", "serve", args.model, "--weights", args.weights, "--threads",
              str(args.threads), "--port", str(port), "--max-queue", str(max(counts)), "--quiet"]  # fmt: skip
    servers["ponder"] = (ponder, port, args.model)
    llama = args.llama_server or find_llama_server()
    if llama is not None:
        port = free_port()
        command = [str(llama), "-m", str(gguf), "-t", str(args.threads), "--port", str(port), "-c", "2048",
                   "--parallel", "1", "--log-disable"]  # fmt: skip
        servers["llama-server"] = (command, port, Path(gguf).name)
    processes = {name: start(command, port, logs / f"{name}.log") for name, (command, port, _) in servers.items()}
    samples = {name: {c: [] for c in counts} for name in servers}
    try:
        for _, port, model in servers.values():  # warm-up: first requests build caches
            asyncio.run(one_round(f"http://127.0.0.1:{port}", model, 1, 2, args.tokens))
        for _ in range(args.rounds):
            for clients in counts:
                for name, (_, port, model) in servers.items():
                    url, per_client = f"http://127.0.0.1:{port}", max(1, args.requests // clients)
                    result = asyncio.run(one_round(url, model, clients, per_client, args.tokens))
                    samples[name][clients].append(result)
    finally:
        for process in processes.values():
            process.terminate()
            process.wait(60)
    table = {}
    for name, by_count in samples.items():
        table[name] = {}
        for clients, rounds in by_count.items():
            latencies = [t for r in rounds for t in r["latencies"]]
            statuses = [s for r in rounds for s in r["statuses"]]
            table[name][clients] = {
                "p50_s": percentile(latencies, 0.5),
                "p95_s": percentile(latencies, 0.95),
                "tok_s": statistics.median(r["tokens"] / r["seconds"] for r in rounds),
                "tok_s_rounds": [r["tokens"] / r["seconds"] for r in rounds],
                "tokens_per_request": statistics.mean(r["tokens"] / max(1, len(r["latencies"])) for r in rounds),
                "refused": statuses.count(429),
                "errors": sum(s >= 500 for s in statuses),
            }
    result = {
        "command": shlex.join([sys.executable, *sys.argv]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "gguf": str(gguf),
        "servers": {name: shlex.join(command) for name, (command, _, _) in servers.items()},
        "llama_server": str(llama) if llama else None,
        "rounds": args.rounds,
        "tokens": args.tokens,
        "results": table,
    }
    write_json_atomic(args.out, result)
    print(json.dumps({name: {c: {k: round(v, 3) for k, v in row.items() if not isinstance(v, list)}
                             for c, row in rows.items()} for name, rows in table.items()}, indent=1))  # fmt: skip
    if llama is None:
        print("no llama-server under", cache_root() / "llama.cpp", "(its build turns the server off): ponder alone")


if __name__ == "__main__":
    main()
