"""How fast and how accurate is ponder against llama.cpp on the same weights, same threads, same sitting?

llama.cpp is built once from the source that ships inside the PyPI sdist of llama-cpp-python (cmake, Release,
-DLLAMA_CURL=OFF -DGGML_NATIVE=ON; only llama-bench, llama-perplexity and llama-quantize) into
$PONDER_CACHE/llama.cpp/<sdist>/ (default ~/.cache/ponder), so later runs skip the build. The ladder comes from the
same weights: the fp32 HF model ponder dequantizes from the default GGUF goes through llama.cpp's own
convert_hf_to_gguf.py (F32/F16) and llama-quantize (Q8_0, Q5_0, Q4_1, Q4_0, Q3_K, Q2_K); `Q4_1-shipped` is the
GGUF file ponder itself loads. Speed: paired rounds, each round runs `llama-bench -r 1` (tg128 and pp128) for every
llama.cpp format and ponder's `bench` command for every ponder format, back to back at the same thread count;
medians, min-max and per-round ratios. Accuracy: `llama-perplexity` and `ponder eval` on the same text (WikiText-2
test, as ponder reads it) at the same context length. Output: JSON with every raw time, a markdown table and the
command that made them.

The build takes about 15-30 minutes on two busy cores (once); the ladder a few minutes (once); each timing round
about a minute per ponder format (ponder's bench also times transformers.generate) plus seconds per llama.cpp
format; perplexity about a minute per format and window count.

    python benchmarks/llamacpp_peer.py [--formats F16,Q8_0,Q4_1-shipped,Q4_1,Q4_0] [--ponder-formats fp32]
        [--rounds 5] [--threads 2] [--windows 20] [--out DIR]
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from pathlib import Path

import gguf

from ponder.data import load_text
from ponder.io import write_json_atomic, write_text_atomic
from ponder.models import DEFAULT_MODEL
from ponder.models.load import _dequantize_gguf, cache_root, resolve
from ponder.timing import cpu_name

SDIST = "llama-cpp-python"
SDIST_VERSION = "0.3.36"
TARGETS = ("llama-bench", "llama-perplexity", "llama-quantize")
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLAMA_CURL=OFF",  # no downloads at run time (newer sources ignore the option: they have no curl)
    "-DLLAMA_OPENSSL=OFF",
    "-DGGML_NATIVE=ON",
    "-DBUILD_SHARED_LIBS=OFF",  # self-contained binaries in the cache
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
)
CONVERTED = ("F32", "F16")  # written by convert_hf_to_gguf.py
QUANTIZED = ("Q8_0", "Q5_0", "Q4_1", "Q4_0", "Q3_K", "Q2_K")  # llama-quantize from the F16 file
SHIPPED = "Q4_1-shipped"  # the GGUF file ponder loads
FORMATS = (*CONVERTED, *QUANTIZED, SHIPPED)
# Which llama.cpp file each ponder format runs the same blocks as (fp32 is what ponder dequantizes the file to).
PONDER_PEER = {"fp32": "F32", "f16": "F16", "q4_1": SHIPPED} | {f.lower(): f for f in QUANTIZED}


def run_logged(command: list[str], log: Path, **kwargs) -> None:
    """Run `command`, its output appended to `log`; on failure exit with the log's tail."""
    with log.open("a") as out:
        out.write(f"$ {shlex.join(command)}\n")
        out.flush()
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False, **kwargs)
    if done.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-20:]
        raise SystemExit(f"{shlex.join(command)} failed ({done.returncode}); see {log}:\n" + "\n".join(tail))


def run_captured(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run `command` for its output; on failure exit naming the command and its last error lines."""
    done = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise SystemExit(f"{shlex.join(command)} failed ({done.returncode}):\n{tail}")
    return done


# --- llama.cpp from the sdist, built once -------------------------------------------------------------------------


def llama_home(version: str) -> Path:
    return cache_root() / "llama.cpp" / f"{SDIST}-{version}"


def fetch_source(home: Path, version: str, sdist: Path | None) -> Path:
    """The vendored llama.cpp tree of the sdist (pip's ordinary download), extracted once under `home`."""
    source = home / "src"
    if (source / "CMakeLists.txt").exists():
        return source
    home.mkdir(parents=True, exist_ok=True)
    if sdist is None:
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", f"{SDIST}=={version}", "-d", str(home)]
        run_logged(pip, home / "fetch.log")
        sdist = home / f"{SDIST.replace('-', '_')}-{version}.tar.gz"
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=home))
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp, filter="tar")
    shutil.rmtree(home / "sdist", ignore_errors=True)
    (tmp / f"{SDIST.replace('-', '_')}-{version}").rename(home / "sdist")
    shutil.rmtree(tmp)
    source.unlink(missing_ok=True)
    source.symlink_to(Path("sdist") / "vendor" / "llama.cpp")
    return source


def git_commit(source: Path) -> str:
    """The vendored llama.cpp commit (the sdist ships the submodule's git data)."""
    done = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def build(home: Path, source: Path, jobs: int) -> dict:
    """Configure and build the three tools once (niced: the machine is shared); the record says how."""
    record_path = home / "build.json"
    if record_path.exists() and all((home / "build" / "bin" / t).exists() for t in TARGETS):
        return json.loads(record_path.read_text()) | {"built_now": False}
    log = home / "build.log"
    start = time.perf_counter()
    run_logged(["cmake", "-S", str(source), "-B", str(home / "build"), *CMAKE_FLAGS], log)
    build_command = ["nice", "-n", "10", "cmake", "--build", str(home / "build"), "--config", "Release"]
    run_logged([*build_command, f"-j{jobs}", "--target", *TARGETS], log)
    record = {
        "sdist": f"{SDIST}=={home.name.removeprefix(SDIST + '-')}",
        "llama_cpp_commit": git_commit(source),
        "cmake_flags": list(CMAKE_FLAGS),
        "build": f"{shlex.join(build_command)} -j{jobs} --target {' '.join(TARGETS)}",
        "build_seconds": round(time.perf_counter() - start, 1),
        "log": str(log),
    }
    write_json_atomic(record_path, record)
    return record | {"built_now": True}


# --- the ladder: the same weights in every format -----------------------------------------------------------------


def gguf_py_version(source: Path) -> str:
    match = re.search(r'^version = "([^"]+)"', (source / "gguf-py" / "pyproject.toml").read_text(), re.M)
    return match.group(1) if match else "unknown"


def convert(source: Path, hf_dir: Path, outtype: str, target: Path, log: Path) -> None:
    """llama.cpp's own converter, with the vendored gguf-py first on the path (the converter also puts it there)."""
    env = os.environ | {"PYTHONPATH": str(source / "gguf-py")}
    tmp = target.with_name(f".tmp-{target.name}")
    converter = [sys.executable, str(source / "convert_hf_to_gguf.py"), str(hf_dir)]
    run_logged(["nice", "-n", "10", *converter, "--outtype", outtype.lower(), "--outfile", str(tmp)], log, env=env)
    tmp.rename(target)


def quantize(home: Path, f16: Path, fmt: str, target: Path, log: Path) -> None:
    tmp = target.with_name(f".tmp-{target.name}")
    run_logged(["nice", "-n", "10", str(home / "build" / "bin" / "llama-quantize"), str(f16), str(tmp), fmt], log)
    tmp.rename(target)


def tensor_types(path: Path) -> dict[str, int]:
    """How many tensors of each block type the file holds (k-quants fall back where rows are not 256-divisible)."""
    return dict(Counter(t.tensor_type.name for t in gguf.GGUFReader(path).tensors))


def ladder(home: Path, source: Path, hf_dir: Path, shipped: Path | None, formats: list[str]) -> dict[str, dict]:
    """Every requested format as a GGUF file, made once and cached beside the build."""
    folder = home / "ladder" / hf_dir.name
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "ladder.log"
    files = {}
    for fmt in formats:
        if fmt == SHIPPED:
            if shipped is not None:
                files[fmt] = {"path": str(shipped), "made_by": "the shipped file ponder loads"}
            continue
        base = fmt if fmt in CONVERTED else "F16"
        if not (folder / f"{base}.gguf").exists():
            convert(source, hf_dir, base, folder / f"{base}.gguf", log)
        if fmt in QUANTIZED and not (folder / f"{fmt}.gguf").exists():
            quantize(home, folder / "F16.gguf", fmt, folder / f"{fmt}.gguf", log)
        made_by = "convert_hf_to_gguf.py" if fmt in CONVERTED else "llama-quantize from F16"
        files[fmt] = {"path": str(folder / f"{fmt}.gguf"), "made_by": made_by}
    for entry in files.values():
        path = Path(entry["path"])
        entry |= {"bytes": path.stat().st_size, "tensor_types": tensor_types(path)}
    return files


# --- one timing of each side --------------------------------------------------------------------------------------


def llama_bench_command(home: Path, model: Path, args: argparse.Namespace) -> list[str]:
    """One llama-bench repetition (after its own warm-up run) of tg and pp at the given threads."""
    command = [str(home / "build" / "bin" / "llama-bench"), "-m", str(model), "-t", str(args.threads), "-r", "1"]
    return command + ["-p", str(args.prefill_tokens), "-n", str(args.new_tokens), "-o", "json"]


def llama_bench(command: list[str]) -> dict[str, float]:
    rows = json.loads(run_captured(command).stdout)
    return {("prefill" if row["n_prompt"] else "decode"): row["samples_ts"][0] for row in rows}


def ponder_command(args: argparse.Namespace, verb: str, fmt: str) -> list[str]:
    """ponder's CLI in a child process (the caller's PYTHONPATH decides which ponder); fp32 needs no flag."""
    command = [sys.executable, "-m", "ponder", verb, args.model, "--threads", str(args.threads), "--quiet"]
    return command + ([] if fmt == "fp32" else ["--weights", fmt])


def ponder_bench_command(args: argparse.Namespace, fmt: str) -> list[str]:
    """One `ponder bench` round (after its own warm-up round): decode is new-tokens greedy tokens after a 1-token
    prompt, the same single-token steps as llama-bench's tg; prefill one forward of prefill-tokens tokens."""
    command = ponder_command(args, "bench", fmt) + ["--repeats", "1", "--prompt-tokens", "1"]
    return command + ["--new-tokens", str(args.new_tokens), "--prefill-tokens", str(args.prefill_tokens)]


def ponder_bench(command: list[str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        run_captured([*command, "--json", f"{tmp}/bench.json"])
        dense = json.loads(Path(f"{tmp}/bench.json").read_text())["dense"]
    return {"decode": dense["decode_tok_s"], "prefill": dense["prefill_tok_s"]}


def ponder_knows(fmt: str) -> str | None:
    """None when ponder's CLI can run `fmt`, else why not (fp32 always; others need a --weights flag)."""
    if fmt == "fp32":
        return None
    done = run_captured([sys.executable, "-m", "ponder", "bench", "--help"])
    if "--weights" not in done.stdout:
        return "this ponder's bench has no --weights flag (fp32 only)"
    done = subprocess.run([sys.executable, "-m", "ponder", "bench", "--weights", fmt, "--help"], capture_output=True)
    return None if done.returncode == 0 else f"ponder rejects --weights {fmt}: {done.stderr.decode().strip()[-200:]}"


# --- paired rounds ------------------------------------------------------------------------------------------------


def bench_commands(
    home: Path, files: dict[str, dict], ponder_formats: list[str], args: argparse.Namespace
) -> dict[str, list[str]]:
    """The timing command of every runtime:format."""
    commands = {f"llama.cpp:{fmt}": llama_bench_command(home, Path(e["path"]), args) for fmt, e in files.items()}
    return commands | {f"ponder:{fmt}": ponder_bench_command(args, fmt) for fmt in ponder_formats}


def paired_rounds(commands: dict[str, list[str]], rounds: int) -> dict:
    """tokens/s per runtime:format and round; every round runs each command once, the order reversed every other
    round so that neither side always runs first; the load average after each round."""
    samples = {name: {"decode": [], "prefill": []} for name in commands}
    loads = []
    for index in range(rounds):
        order = list(commands) if index % 2 == 0 else list(reversed(commands))
        for name in order:
            run = llama_bench if name.startswith("llama.cpp:") else ponder_bench
            for kind, value in run(commands[name]).items():
                samples[name][kind].append(value)
        loads.append(os.getloadavg()[0])
        print(f"round {index + 1}/{rounds} done (load {loads[-1]:.2f})", file=sys.stderr, flush=True)
    return {"samples": samples, "load_after_round": loads}


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def ratios(samples: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, float]]:
    """ponder tokens/s / llama.cpp tokens/s, the median over rounds of the two runs of the same round."""
    out = {}
    for p_name, p in samples.items():
        for l_name, peer in samples.items():
            if p_name.startswith("ponder:") and l_name.startswith("llama.cpp:"):
                same = PONDER_PEER.get(p_name.removeprefix("ponder:")) == l_name.removeprefix("llama.cpp:")
                out[f"{p_name} / {l_name}"] = {
                    kind: statistics.median(a / b for a, b in zip(p[kind], peer[kind], strict=True)) for kind in p
                } | {"same_format": same}
    return out


# --- perplexity on the same text ----------------------------------------------------------------------------------


def llama_perplexity(home: Path, model: Path, text: Path, args: argparse.Namespace, *, all_tokens: bool) -> dict:
    """llama-perplexity over the first `windows` windows of `window_len` tokens.

    Default protocol: non-overlapping windows from the start, only the second half of each scored (its tokens
    window_len/2 + 2 .. window_len). With `all_tokens`, the strided mode: `--ppl-stride S` widens the context to
    c + S/2 and scores the last S predictions of windows S apart, so c = L - (L-1)//2 and S = L - 1 give windows
    of L tokens with every prediction scored (tokens 2..L), as ponder's eval, but each window starts L - 1 (not L)
    tokens after the previous one.
    """
    length = args.window_len
    command = [str(home / "build" / "bin" / "llama-perplexity"), "-m", str(model), "-f", str(text)]
    command += ["-t", str(args.threads), "--chunks", str(args.windows)]
    if all_tokens:
        context = length - (length - 1) // 2
        command += ["-c", str(context), "-b", str(context), "--ppl-stride", str(length - 1)]
    else:
        command += ["-c", str(length), "-b", str(length)]
    done = run_captured(command)
    log = done.stdout + done.stderr
    running = re.findall(r"\[(\d+)\](\d+\.\d+)", log)
    if not running:
        raise SystemExit(f"no perplexity in the output of {shlex.join(command)}")
    tokens = re.search(r"have (\d+) tokens", log)
    return {
        "perplexity": float(running[-1][1]),
        "windows": int(running[-1][0]),
        "text_tokens": int(tokens.group(1)) if tokens else None,
        "command": shlex.join(command),
    }


def hf_token_count(hf_dir: Path, text: Path) -> int:
    """Tokens of the whole text as ponder's eval tokenizes it (HF tokenizer, no special tokens), to compare with
    llama.cpp's own tokenizer's count."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(hf_dir))
    return len(tokenizer(text.read_text(), add_special_tokens=False).input_ids)


def ponder_eval(args: argparse.Namespace, fmt: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        command = ponder_command(args, "eval", fmt) + ["--data", args.data, "--windows", str(args.windows)]
        command += ["--window-len", str(args.window_len)]
        run_captured([*command, "--json", f"{tmp}/eval.json"])
        result = json.loads(Path(f"{tmp}/eval.json").read_text())
    return {"perplexity": result["perplexity"], "scored_tokens": result["tokens"], "command": shlex.join(command)}


def perplexities(
    home: Path, files: dict[str, dict], ponder_formats: list[str], text: Path, args: argparse.Namespace
) -> dict:
    out = {}
    for fmt, entry in files.items():
        model = Path(entry["path"])
        out[f"llama.cpp:{fmt}"] = {
            "all_tokens": llama_perplexity(home, model, text, args, all_tokens=True),
            "second_half": llama_perplexity(home, model, text, args, all_tokens=False),
        }
    return out | {f"ponder:{fmt}": ponder_eval(args, fmt) for fmt in ponder_formats}


# --- the report ---------------------------------------------------------------------------------------------------


def rate_cell(values: list[float]) -> str:
    s = summary(values)
    return f"{s['median']:.1f} [{s['min']:.1f}-{s['max']:.1f}]"


def markdown(result: dict) -> str:
    samples = result["speed"]["samples"]
    settings = result["settings"]
    lines = [
        f"`{result['command']}`",
        "",
        f"{result['llama_cpp']['sdist']} (llama.cpp {result['llama_cpp']['llama_cpp_commit'][:10]}), "
        f"{settings['threads']} threads, {settings['rounds']} paired rounds, tg{settings['new_tokens']} / "
        f"pp{settings['prefill_tokens']}, tokens/s median [min-max]; perplexity: {settings['data']}, "
        f"first {settings['windows']} windows of {settings['window_len']} tokens. {result['machine']['cpu']}, "
        f"load average {result['machine']['load_start']:.2f} at the start, {result['machine']['load_end']:.2f} "
        "at the end.",
        "",
        "| runtime:format | decode tok/s | prefill tok/s | ppl, every token | ppl, 2nd half (llama.cpp's default) |"
        " MiB |",
        "|---|---|---|---|---|---|",
    ]
    for name, kinds in samples.items():
        ppl = result["perplexity"].get(name, {})
        every = ppl.get("all_tokens", ppl).get("perplexity")
        half = ppl.get("second_half", {}).get("perplexity")
        size = result["ladder"].get(name.removeprefix("llama.cpp:"), {}).get("bytes") if "llama" in name else None
        cells = [rate_cell(kinds["decode"]), rate_cell(kinds["prefill"])]
        cells += [f"{v:.3f}" if v else "" for v in (every, half)] + [f"{size / 2**20:.1f}" if size else ""]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "| ponder / llama.cpp (paired, median) | decode | prefill |", "|---|---|---|"]
    for pair, ratio in result["ratios"].items():
        same = " (same format)" if ratio["same_format"] else ""
        lines.append(f"| {pair}{same} | {ratio['decode']:.3f} | {ratio['prefill']:.3f} |")
    llama_counts = {p["all_tokens"]["text_tokens"] for n, p in result["perplexity"].items() if "llama" in n}
    if "hf_text_tokens" in result["perplexity"]:
        lines.append(
            f"\nwhole text in tokens: {result['perplexity']['hf_text_tokens']} by ponder's (HF) tokenizer, "
            f"{', '.join(map(str, sorted(llama_counts)))} by llama.cpp's."
        )
    lines += [f"\nskipped: {s['side']}:{s['format']}: {s['why']}" for s in result["skipped"]]
    return "\n".join(lines) + "\n"


def formats_arg(value: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in FORMATS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown formats {unknown}: choose from {', '.join(FORMATS)}")
    return names


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="alias or .gguf file (the shipped file of the ladder)")
    parser.add_argument("--formats", type=formats_arg, default="F16,Q8_0,Q4_1-shipped,Q4_1,Q4_0",
                        help=f"llama.cpp formats, from {', '.join(FORMATS)}")  # fmt: skip
    parser.add_argument("--ponder-formats", default="fp32", help="ponder weights, e.g. fp32,q4_1,q8_0,q4_0")
    parser.add_argument("--rounds", type=int, default=5, help="paired timing rounds (>= 5 for a reported number)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=128, help="decode tokens (llama-bench tg)")
    parser.add_argument("--prefill-tokens", type=int, default=128, help="prompt tokens (llama-bench pp)")
    parser.add_argument("--data", default="wikitext2", help="ponder's bundled name or a .txt file")
    parser.add_argument("--windows", type=int, default=20, help="perplexity windows (0: skip perplexity)")
    parser.add_argument("--window-len", type=int, default=1024)
    parser.add_argument("--jobs", type=int, default=2, help="parallel compile jobs of the one-time build")
    parser.add_argument("--sdist", type=Path, default=None, help="a local llama-cpp-python sdist (default: pip's)")
    parser.add_argument("--out", type=Path, default=Path("runs/llamacpp-peer"))
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    started = datetime.datetime.now(datetime.UTC)
    load_start = os.getloadavg()[0]
    command = shlex.join(["python", *sys.argv])
    if os.environ.get("PYTHONPATH"):
        command = f"PYTHONPATH={shlex.quote(os.environ['PYTHONPATH'])} {command}"
    home = llama_home(SDIST_VERSION)
    source = fetch_source(home, SDIST_VERSION, args.sdist)
    record = build(home, source, args.jobs) | {"converter_gguf_py": f"vendored gguf-py {gguf_py_version(source)}"}
    kind, where = resolve(args.model)
    shipped = Path(where) if kind == "gguf" else None
    hf_dir = _dequantize_gguf(shipped) if shipped else Path(where)
    files = ladder(home, source, hf_dir, shipped, args.formats)
    skipped = []
    if SHIPPED in args.formats and shipped is None:
        skipped.append({"side": "llama.cpp", "format": SHIPPED, "why": "the model is not a GGUF file"})
    ponder_formats = []
    for fmt in [f.strip() for f in args.ponder_formats.split(",") if f.strip()]:
        why = ponder_knows(fmt)
        if why:
            skipped.append({"side": "ponder", "format": fmt, "why": why})
        else:
            ponder_formats.append(fmt)
    args.out.mkdir(parents=True, exist_ok=True)
    text = args.out / "eval-text.txt"
    write_text_atomic(text, load_text(args.data))  # as ponder reads it: text mode, CRLF -> LF
    commands = bench_commands(home, files, ponder_formats, args)
    speed = paired_rounds(commands, args.rounds) | {"commands": {n: shlex.join(c) for n, c in commands.items()}}
    ppl = perplexities(home, files, ponder_formats, text, args) if args.windows else {}
    if ppl:
        ppl["hf_text_tokens"] = hf_token_count(hf_dir, text)
    load_end = os.getloadavg()[0]
    result = {
        "command": command,
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "load_start": load_start, "load_end": load_end},
        "llama_cpp": record,
        "settings": {k: v if not isinstance(v, Path) else str(v) for k, v in vars(args).items()}
        | {"text_sha256": hashlib.sha256(text.read_bytes()).hexdigest()},
        "ladder": files,
        "skipped": skipped,
        "speed": speed | {"summary": {n: {k: summary(v) for k, v in s.items()} for n, s in speed["samples"].items()}},
        "ratios": ratios(speed["samples"]),
        "perplexity": ppl,
    }
    write_json_atomic(args.out / "peer.json", result)
    table = markdown(result)
    write_text_atomic(args.out / "peer.md", table)
    print(table)


if __name__ == "__main__":
    main()
