"""Is a change to the quantized runtime's C source faster? The working tree's runtime.c against a git revision's.

Both sources are compiled with the runtime's own flags; one `QuantDecoder` per format swaps between the two
libraries round by round (interleaved), each round decoding `--steps` greedy tokens after a 64-token prompt. Prints
the median tokens/s of each, the median of the per-round ratios (working tree / revision) and whether the two
produced the same tokens (a summation-order change may flip a near tie; the tests hold each build's own T = 1 and
T > 1 paths equal). About 1 minute a format and thread count.

    python benchmarks/runtime_ab.py --base HEAD~1 [--formats q4_1,q4_0,q8_0] [--threads 1,2] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from ponder.models import DEFAULT_MODEL
from ponder.quant.runtime import _INCLUDED, _SOURCE, FLAGS, QuantDecoder, build, load_library, source_path


def revision_library(revision: str, directory: Path):
    """The runtime built from `revision`'s sources (runtime.c and what it includes)."""
    here = source_path().parent
    top = Path(subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, cwd=here,
                              check=True).stdout.strip())  # fmt: skip
    for name in (_SOURCE, *_INCLUDED):
        path = f"{revision}:{(here / name).resolve().relative_to(top)}"
        text = subprocess.run(["git", "show", path], capture_output=True, text=True, cwd=top, check=True).stdout
        (directory / name).write_text(text)
    return load_library(build(directory / "base.so", FLAGS, source=directory / _SOURCE))


def decode(decoder: QuantDecoder, steps: int) -> tuple[float, list[int]]:
    decoder.reset()
    token = decoder.next_token(torch.arange(100, 164))
    tokens = [token]
    start = time.perf_counter()
    for _ in range(steps):
        token = decoder.next_token(torch.tensor([token]))
        tokens.append(token)
    return steps / (time.perf_counter() - start), tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="git revision to compare against, e.g. HEAD~1")
    parser.add_argument("--formats", default="q4_1,q4_0,q8_0")
    parser.add_argument("--threads", default="2", help="comma-separated thread counts")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=128)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        libraries = {"working tree": None, args.base: revision_library(args.base, Path(tmp))}
        for fmt in args.formats.split(","):
            for threads in map(int, args.threads.split(",")):
                decoder = QuantDecoder(DEFAULT_MODEL, weights=fmt, threads=threads)
                libraries["working tree"] = decoder.lib
                speeds: dict[str, list[float]] = {name: [] for name in libraries}
                tokens: dict[str, list[int]] = {}
                for _ in range(args.rounds):
                    for name, library in libraries.items():
                        decoder.lib = library
                        speed, tokens[name] = decode(decoder, args.steps)
                        speeds[name].append(speed)
                pairs = zip(speeds["working tree"], speeds[args.base], strict=True)
                ratio = statistics.median(a / b for a, b in pairs)
                print(
                    f"{fmt}, {threads} threads: working tree {statistics.median(speeds['working tree']):.1f} tok/s, "
                    f"{args.base} {statistics.median(speeds[args.base]):.1f} tok/s, ratio {ratio:.3f}, "
                    f"same tokens: {'yes' if tokens['working tree'] == tokens[args.base] else 'no'}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
