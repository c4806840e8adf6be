"""Every option that `ponder CMD --help` lists, used by a test that checks its effect.

`COVERAGE` maps each (command, option) of the parser to the test that exercises it; `test_every_option_has_a_test`
fails when an option is added without a test, or a listed test (with its fixtures) never passes the option.
Models are tiny random ones (tests/conftest.py); the converted ones are made once per module through the CLI.
"""

from __future__ import annotations

import argparse
import copy
import html
import inspect
import json
import re
import sys

import pytest
import torch

import ponder.models
from conftest import tiny_model
from ponder.adaptive import adaptive_modules, load
from ponder.cli import COMMANDS, QUANT_ACTIVATIONS, build_parser, main
from ponder.data import first_tokens, load_text
from ponder.kernels import native
from ponder.methods import get_method

CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['content'] }}</s>{% endfor %}{% if add_generation_prompt %}<s>{% endif %}"
)
SHORT_TEXT = "A short text of a few words for routing."
REPORT_TEXT = "Ponder the quiet river, and the river will ponder you. " * 20


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()  # drop what fixtures printed
    code = main([str(part) for part in argv])
    out, err = capsys.readouterr()
    return code, out, err


def read_json(path) -> dict:
    return json.loads(path.read_text())


# --- models and directories, made once -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("cli-options")


@pytest.fixture(scope="module")
def texts(root):
    """Text files for --data, --calib and --text."""
    paths = {"calib": root / "calib.txt", "data": root / "data.txt", "short": root / "short.txt"}
    paths["calib"].write_text(load_text("wikitext2-valid")[:40000])
    paths["data"].write_text(load_text("wikitext2-valid")[40000:50000])
    paths["short"].write_text(SHORT_TEXT)
    paths["report"] = root / "report.txt"
    paths["report"].write_text(REPORT_TEXT)
    return paths


@pytest.fixture(scope="module")
def base(root, tokenizer):
    """A tiny Llama whose tokenizer has a chat template (so `generate --raw` has something to skip)."""
    path = root / "base"
    tiny_model("llama").save_pretrained(path)
    chat = copy.deepcopy(tokenizer)
    chat.chat_template = CHAT_TEMPLATE
    chat.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def teal(root, base, texts):
    """`convert --budget`: the budget applies to the converted model and saves with it."""
    out = root / "teal"
    argv = ["convert", base, "--method", "teal", "--budget", "0.5", "-o", out]
    assert main([*map(str, argv), "--calib", str(texts["calib"]), "--calib-tokens", "1024", "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def moe(root, base):
    out = root / "moe"
    options = ["--set", "experts=16", "--set", "shared_experts=2", "--set", "steps=50", "--calib-tokens", "1024"]
    assert main(["convert", str(base), "--method", "moe", "-o", str(out), *options, "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def nested(root, base):
    out = root / "nested"
    assert main(["convert", str(base), "--method", "nested", "-o", str(out), "--calib-tokens", "1024", "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def sweep_dir(root, base):
    out = root / "sweep"
    argv = ["sweep", str(base), "--methods", "teal", "--budgets", "1,0.5", "-o", str(out), "--windows", "1"]
    argv += ["--calib-tokens", "1024", "--task", "piqa", "--task-limit", "2", "--bench", "--repeats", "1", "--quiet"]
    assert main(argv) == 0
    return out


@pytest.fixture
def loads(monkeypatch) -> list:
    """Every model a command loads (the same object a converted directory's modules are put into)."""
    real, models = ponder.models.load, []

    def spy(*args, **kwargs):
        model, tokenizer = real(*args, **kwargs)
        models.append(model)
        return model, tokenizer

    monkeypatch.setattr(ponder.models, "load", spy)
    return models


# --- options of every command that loads a model --------------------------------------------------------------


class Loaded(Exception):
    """Raised by the loader spy: the command got as far as loading its model."""

    def __init__(self, model):
        self.model = model


LOADING = {
    "demo": ["demo", "--model", "{base}"],
    "eval": ["eval", "{base}"],
    "bench": ["bench", "{base}"],
    "convert": ["convert", "{base}", "--method", "teal", "-o", "{tmp}/out"],
    "export": ["export", "{base}", "--width", "0.5", "-o", "{tmp}/out"],
    "sweep": ["sweep", "{base}", "--methods", "teal", "-o", "{tmp}/sweep"],
    "report": ["report", "{sweep}"],
    "inspect": ["inspect", "{base}"],
    "oracle": ["oracle", "{base}"],
    "generate": ["generate", "{base}", "hello"],
    "serve": ["serve", "{base}"],
}


def test_loading_covers_every_command():
    assert set(LOADING) == set(COMMANDS) - {"quantize"}  # quantize takes no --dtype: test_quantize_options


@pytest.mark.parametrize("quiet", [True, False], ids=["quiet", "bars"])
@pytest.mark.parametrize("command", list(LOADING))
def test_loading_options(command, quiet, request, capsys, monkeypatch, base, tmp_path):
    """--dtype and --threads reach the model load of every command; --quiet silences transformers' bars."""
    real = ponder.models.load

    def stop(*args, **kwargs):
        raise Loaded(real(*args, **kwargs)[0])

    names = {"base": base, "tmp": tmp_path}
    if command == "report":
        names["sweep"] = request.getfixturevalue("sweep_dir")
    monkeypatch.setattr(ponder.models, "load", stop)
    threads = torch.get_num_threads()
    argv = [part.format(**names) for part in LOADING[command]] + ["--dtype", "bfloat16", "--threads", str(threads + 1)]
    capsys.readouterr()
    try:
        with pytest.raises(Loaded) as loaded:
            main(argv + (["--quiet"] if quiet else []))
        assert torch.get_num_threads() == threads + 1
    finally:
        torch.set_num_threads(threads)
    assert loaded.value.model.dtype == torch.bfloat16
    assert ("Loading weights" in capsys.readouterr().err) is not quiet


# --- convert ---------------------------------------------------------------------------------------------------


def test_convert_budget_saves_and_eval_uses_it(capsys, teal, texts, tmp_path):
    config = read_json(teal / "ponder_config.json")
    assert config["method"] == "teal" and config["budget"] == 0.5
    assert config["calibration"]["data"] == str(texts["calib"]) and config["calibration"]["tokens"] == 1024
    out = tmp_path / "eval.json"
    code, _, err = run_cli(capsys, "eval", teal, "--windows", "1", "--window-len", "64", "--json", out, "--quiet")
    assert code == 0, err
    result = read_json(out)
    assert result["budget"] == 0.5 and result["method"] == "teal"
    assert result["ffn_compute"] == pytest.approx(0.5, abs=0.1)


def test_convert_options_reach_the_saved_model(capsys, base, tmp_path):
    out = tmp_path / "teal"
    out.mkdir()
    (out / "stale.txt").write_text("from an earlier run")
    argv = ["convert", base, "--method", "teal", "-o", out, "--calib-tokens", "1024", "--min-budget", "0.3"]
    code, _, err = run_cli(capsys, *argv, "--set", "split=uniform", "--allocation", "greedy", "--overwrite", "--quiet")
    assert code == 0, err
    assert err == ""  # --quiet: no bars from capture, calibration or allocation
    assert not (out / "stale.txt").exists()
    config = read_json(out / "ponder_config.json")
    assert config["config"]["min_budget"] == 0.3 and config["config"]["split"] == "uniform"
    assert config["calibration"]["allocation"] == "greedy" and config.get("budget", 1.0) == 1.0


def test_convert_resume_continues_an_interrupted_conversion(capsys, monkeypatch, base, tmp_path):
    layer = get_method("teal").layer_class
    real, calls = layer.calibrate, []

    def dying(self, *inputs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed while calibrating the second layer
        return real(self, *inputs)

    monkeypatch.setattr(layer, "calibrate", dying)
    out = tmp_path / "teal"
    argv = ["convert", base, "--method", "teal", "-o", out, "--calib-tokens", "1024", "--quiet"]
    assert run_cli(capsys, *argv)[0] == 130
    assert (tmp_path / ".teal.partial").is_dir() and not out.exists()
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and "pass --resume" in err
    calls.clear()
    code, _, err = run_cli(capsys, *argv, "--resume")
    assert code == 0, err
    assert len(calls) == 1  # the first layer's checkpoint was kept
    assert not (tmp_path / ".teal.partial").exists()
    assert len(adaptive_modules(load(str(out))[0])) == 2


# --- eval ------------------------------------------------------------------------------------------------------


def test_eval_options(capsys, teal, texts, tmp_path):
    out, default = tmp_path / "eval.json", tmp_path / "default.json"
    argv = ["eval", teal, "--budget", "0.25", "--windows", "2", "--window-len", "32", "--quiet"]
    code, _, err = run_cli(capsys, *argv, "--data", texts["data"], "--json", out)
    assert code == 0, err
    assert err == ""  # --quiet: no perplexity bar
    result = read_json(out)
    assert result["tokens"] == 2 * 31 and result["budget"] == 0.25 and result["data"] == str(texts["data"])
    assert result["ffn_compute"] == pytest.approx(0.25, abs=0.1)
    assert run_cli(capsys, *argv, "--json", default)[0] == 0  # the same, on the default text
    assert read_json(default)["data"] == "wikitext2"
    assert read_json(default)["perplexity"] != result["perplexity"]


def test_eval_task_options(capsys, monkeypatch, teal, tmp_path):
    """Sequences of one length share a forward pass, up to --batch-size of them."""
    batches, real = [], ponder.models.load

    def record_batch(_module, args, kwargs):
        batches.append((args[0] if args else kwargs["input_ids"]).shape[0])

    def load_and_watch(*args, **kwargs):
        model, tokenizer = real(*args, **kwargs)
        model.register_forward_pre_hook(record_batch, with_kwargs=True)
        return model, tokenizer

    monkeypatch.setattr(ponder.models, "load", load_and_watch)
    out = tmp_path / "task.json"
    argv = ["eval", teal, "--task", "piqa", "--limit", "20", "--budget", "0.5", "--json", out, "--quiet"]
    code, _, err = run_cli(capsys, *argv, "--batch-size", "1")
    assert code == 0, err
    result = read_json(out)
    assert result["task"] == "piqa" and result["n"] == 20 and result["budget"] == 0.5
    assert batches == [1] * 40  # 20 items of 2 choices, one a forward
    batches.clear()
    assert run_cli(capsys, *argv)[0] == 0  # up to 32 a forward
    assert sum(batches) == 40 and max(batches) > 1
    assert read_json(out)["acc"] == result["acc"]


# --- bench -----------------------------------------------------------------------------------------------------


def test_bench_options(capsys, teal, tmp_path):
    out = tmp_path / "bench.json"
    argv = ["bench", teal, "--budgets", "0.5,0.25", "--repeats", "1", "--prompt-tokens", "8", "--new-tokens", "4"]
    code, _, err = run_cli(capsys, *argv, "--prefill-tokens", "16", "--ceiling", "--json", out, "--quiet")
    assert code == 0, err
    assert err == ""
    result = read_json(out)
    assert [row["budget"] for row in result["budgets"]] == [0.5, 0.25]
    assert (result["prompt_tokens"], result["new_tokens"], result["prefill_tokens"]) == (8, 4, 16)
    assert result["repeats"] == 1
    for row in result["budgets"]:
        assert row["decode_tok_s_min"] == row["decode_tok_s_max"]  # one timed round: nothing to spread
        assert ("ceiling_decode_speedup" in row) is (result["lean_path"] == "native" and native.library() is not None)
    code, _, err = run_cli(capsys, "bench", teal, "--budgets", "0.5", "--repeats", "1", "--new-tokens", "2",
                           "--prefill-tokens", "8", "--json", out, "--quiet")  # fmt: skip
    assert code == 0, err
    assert "ceiling_decode_speedup" not in read_json(out)["budgets"][0]


# --- routed models: --policy and inspect ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "--windows", "1", "--window-len", "32"],
        ["bench", "--budgets", "0.5", "--repeats", "1", "--new-tokens", "2", "--prefill-tokens", "8"],
        ["generate", "The river", "--max-new-tokens", "2"],
        ["inspect", "--tokens", "16"],
    ],
    ids=lambda argv: argv[0],
)
def test_policy_reaches_the_routed_model(capsys, loads, moe, argv):
    command, *rest = argv
    code, _, err = run_cli(capsys, command, moe, *rest, "--policy", "top-p", "--quiet")
    assert code == 0, err
    [model] = loads
    assert {module.policy for module in adaptive_modules(model)} == {"top-p"}


def test_inspect_options(capsys, moe, texts, tokenizer, tmp_path):
    report = tmp_path / "inspect.json"
    argv = ("inspect", moe, "--budget", "0.5", "--policy", "top-k", "--tokens", "200", "--json", report, "--quiet")
    code, text, err = run_cli(capsys, *argv)
    assert code == 0, err
    result = read_json(report)
    assert result["tokens"] == 200 and result["policy"] == "top-k" and result["budget"] == 0.5
    assert len(result["layers"]) == 2
    layer = result["layers"][0]
    assert sum(layer["histogram"]) == 200 and len(layer["load"]) == 14
    assert sum(result["pseudo_share"].values()) == pytest.approx(1.0)
    assert "experts per token" in text
    code, _, err = run_cli(capsys, "inspect", moe, "--data", texts["short"], "--json", report, "--quiet")
    assert code == 0, err
    assert read_json(report)["tokens"] == len(first_tokens(tokenizer, SHORT_TEXT, 1024)) < 200


def test_convert_set_reaches_the_method(moe):
    config = read_json(moe / "ponder_config.json")
    assert config["method"] == "moe" and config["config"]["experts"] == 16
    assert config["config"]["shared_experts"] == 2 and config["calibration"]["tokens"] == 1024
    assert not (moe.parent / ".moe.partial").exists()  # captured shards and layer checkpoints removed on success


# --- generate --------------------------------------------------------------------------------------------------


def test_generate_options(capsys, monkeypatch, teal):
    from ponder.inference import LeanDecoder

    prompts, lengths, real = [], [], LeanDecoder.generate

    def recording(self, ids, max_new_tokens, **kwargs):
        prompts.append(ids[0].tolist())
        lengths.append(max_new_tokens)
        return real(self, ids, max_new_tokens, **kwargs)

    monkeypatch.setattr(LeanDecoder, "generate", recording)
    argv = ["generate", teal, "The river", "--max-new-tokens", "5", "--quiet"]
    code, out, err = run_cli(capsys, *argv, "--raw", "--budget", "0.25", "--show-compute")
    assert code == 0, err
    stats = re.search(r"(\d+) tokens in .* mean FFN compute ([0-9.]+) of dense", out.replace("\n", " "))
    assert int(stats.group(1)) <= 5 and float(stats.group(2)) == pytest.approx(0.25, abs=0.15)
    assert lengths == [5]  # at most 5: generation stops early at EOS
    assert run_cli(capsys, *argv)[0] == 0  # at the saved budget, in the chat template
    assert lengths == [5, 5]
    _, tokenizer = load(str(teal))
    raw, templated = prompts
    assert raw == tokenizer("The river", add_special_tokens=False).input_ids
    assert templated == tokenizer("<s>The river</s><s>", add_special_tokens=False).input_ids  # CHAT_TEMPLATE
    for extra in ([], ["--show-compute"]):  # --hold-budget reports what it spent, streamed or not
        code, out, err = run_cli(capsys, *argv, "--raw", "--budget", "0.5", "--hold-budget", *extra)
        assert code == 0, err
        held = re.search(r"FFN compute spent ([0-9.]+) for budget 0.5 \(knob ended at ([0-9.]+)\)", out)
        assert held and 0.0 < float(held.group(1)) <= 1.0 and 0.0 < float(held.group(2)) <= 1.0


# --- serve -----------------------------------------------------------------------------------------------------


def test_serve_options(capsys, monkeypatch, teal, base):
    """Each option reaches the server (uvicorn is replaced by a recorder); bad values fail before any model loads."""
    import ponder.serve

    served = []
    monkeypatch.setattr(ponder.serve, "serve", lambda backend, **options: served.append((backend, options)))
    argv = ["serve", teal, "--budget", "0.25", "--host", "0.0.0.0", "--port", "8123", "--max-queue", "3"]
    code, out, err = run_cli(capsys, *argv, "--timeout", "2.5", "--quiet")
    assert code == 0, err
    backend, options = served[-1]
    assert backend.adaptive and backend.default_budget() == 0.25
    assert options == {"model": str(teal), "host": "0.0.0.0", "port": 8123, "max_queue": 3, "timeout": 2.5,
                       "quiet": True}  # fmt: skip
    assert "http://0.0.0.0:8123/v1" in out
    assert run_cli(capsys, "serve", base, "--weights", "q8_0", "--quiet")[0] == 0
    assert served[-1][0].decoder.model.weights == "q8_0" and served[-1][1]["port"] == 8000
    for bad in (["--port", "0"], ["--max-queue", "0"], ["--timeout", "0"], ["--budget", "2"]):
        code, _, err = run_cli(capsys, "serve", base, *bad)
        assert code == 2 and bad[0] in err, bad
    code, _, err = run_cli(capsys, "serve", base, "--weights", "q4_1", "--budget", "0.5")
    assert code == 2 and "--budget" in err
    assert len(served) == 2


# --- demo ------------------------------------------------------------------------------------------------------


def test_demo_options(capsys, base, tmp_path):
    """load -> eval -> convert -> eval at a budget -> bench, as `ponder demo` does on the default model."""
    out_file = tmp_path / "demo.json"
    argv = ["demo", "--model", base, "--method", "cats", "--budget", "0.6", "--windows", "1", "--repeats", "1"]
    code, out, err = run_cli(capsys, *argv, "--quiet", "--json", out_file)
    assert code == 0, err
    assert err == ""
    result = read_json(out_file)
    dense, sparse = result["eval"]
    assert (dense["method"], sparse["method"], sparse["budget"]) == ("dense", "cats", 0.6)
    assert dense["tokens"] == sparse["tokens"] == 1023
    assert sparse["ffn_compute"] == pytest.approx(0.6, abs=0.1)
    [row] = result["bench"]["budgets"]
    assert row["budget"] == 0.6 and result["bench"]["repeats"] == 1
    assert "demo finished" in out


# --- sweep and report ------------------------------------------------------------------------------------------


def test_sweep_options(sweep_dir):
    records = [json.loads(line) for line in (sweep_dir / "results.jsonl").read_text().splitlines()]
    quality = {(r["method"], r["budget"]): r for r in records if "perplexity" in r}
    assert set(quality) == {("dense", 1.0), ("teal", 1.0), ("teal", 0.5)}
    assert {r["tokens"] for r in quality.values()} == {1023}  # --windows 1
    tasks = [r for r in records if "acc" in r]
    assert len(tasks) == 3 and {r["task_n"] for r in tasks} == {2}
    [speed] = [r for r in records if "decode_speedup" in r]
    assert speed["budget"] == 0.5 and speed["decode_tok_s_min"] == speed["decode_tok_s_max"]  # --repeats 1
    assert read_json(sweep_dir / "models" / "teal" / "ponder_config.json")["calibration"]["tokens"] == 1024


def heatmap(page: str) -> list[float]:
    return [float(v) for v in re.findall(r'class="tok" data-index="\d+" data-compute="([0-9.]+)"', page)]


def test_report_options(capsys, sweep_dir, texts, tmp_path):
    page = tmp_path / "page.html"
    argv = ["report", sweep_dir, "--method", "teal", "--text", texts["report"], "--tokens", "20", "-o", page]
    code, _, err = run_cli(capsys, *argv, "--budget", "0.25", "--quiet")
    assert code == 0, err
    sparse = heatmap(page.read_text())
    assert len(sparse) == 20 and max(sparse) < 1.0
    pieces = re.findall(r'<span class="tok" [^>]*>([^<]*)</span>', page.read_text())
    assert REPORT_TEXT.startswith(html.unescape("".join(pieces)))  # the heatmap shows --text
    assert run_cli(capsys, *argv, "--budget", "1.0", "--quiet")[0] == 0
    assert heatmap(page.read_text()) == [1.0] * 20
    code, _, err = run_cli(capsys, "report", sweep_dir, "--method", "cats", "--quiet")
    assert code == 2 and "choose one of teal" in err


# --- nested models: export and oracle --------------------------------------------------------------------------


def test_export_options(capsys, nested, tmp_path):
    from transformers import AutoConfig

    out = tmp_path / "sliced"
    code, text, err = run_cli(capsys, "export", nested, "--width", "0.25", "-o", out, "--quiet")
    assert code == 0, err
    assert AutoConfig.from_pretrained(out).intermediate_size == 16
    code, text, err = run_cli(capsys, "export", nested, "--width", "0.5,0.25", "-o", out, "--overwrite", "--quiet")
    assert code == 0, err
    assert "8 4 of 16 learners" in text
    code, text, err = run_cli(capsys, "export", nested, "--width", "0.5", "--allocation", "greedy", "-o", out,
                              "--overwrite", "--quiet")  # fmt: skip
    assert code == 0, err
    assert err == "" and "mean width 0.500" in text


def test_oracle_options(capsys, nested, texts, tmp_path):
    out = tmp_path / "oracle.json"
    argv = ["oracle", nested, "--budget", "0.4", "--data", texts["data"], "--tokens", "48", "--small", "0.5"]
    code, text, err = run_cli(capsys, *argv, "--json", out, "--quiet")
    assert code == 0, err
    assert err == ""
    result = read_json(out)
    assert result["tokens"] == 48 and result["data"] == str(texts["data"])
    assert result["options"] == {"skip": 0, "small": 8, "big": 16}  # half of the 16 learners
    assert result["oracle_ffn_compute"] <= 0.4 + 1e-6
    assert "oracle" in text


# --- the KV cache's options (eval, generate, bench, sweep) ----------------------------------------------------

KV = ["--kv-budget", "0.5", "--kv-policy", "h2o", "--kv-bits", "8"]


def test_kv_eval_options(capsys, base, texts, tmp_path):
    """--kv-* score the last tokens of each window through the compressed cache; --kv-budget 1 is the full one."""
    out, full = tmp_path / "kv.json", tmp_path / "full.json"
    argv = ["eval", base, "--windows", "1", "--window-len", "64", "--data", texts["data"], "--quiet"]
    code, _, err = run_cli(capsys, *argv, *KV, "--json", out)
    assert code == 0, err
    result = read_json(out)
    assert result["tokens"] == 32 and (result["kv_budget"], result["kv_policy"], result["kv_bits"]) == (0.5, "h2o", 8)
    assert run_cli(capsys, *argv, "--kv-budget", "1", "--json", full)[0] == 0
    assert read_json(full)["tokens"] == 32 and read_json(full)["perplexity"] != result["perplexity"]
    for bad, message in [("0", "must be positive"), ("-2", "must be positive"), ("1.5", "above 1"), ("x", "number")]:
        code, _, err = run_cli(capsys, *argv, "--kv-budget", bad)
        assert code == 2 and message in err and err.count("\n") == 1
    code, _, err = run_cli(capsys, *argv, "--kv-budget", "100")
    assert code == 2 and "above the context of 64" in err
    code, _, err = run_cli(capsys, "eval", base, "--weights", "q8_0", *KV)
    assert code == 2 and "drop --weights" in err


def test_kv_generate_options(capsys, monkeypatch, base):
    from ponder.kvcache.generate import CachedGenerator

    caches, real = [], CachedGenerator.generate

    def recording(self, ids, max_new_tokens, **kwargs):
        caches.append(self.config)
        return real(self, ids, max_new_tokens, **kwargs)

    monkeypatch.setattr(CachedGenerator, "generate", recording)
    argv = ["generate", base, "The river runs", "--max-new-tokens", "6", "--raw", "--quiet"]
    code, out, err = run_cli(capsys, *argv, "--kv-budget", "4", "--kv-policy", "window", "--kv-bits", "4")
    assert code == 0, err
    assert "tokens in" in out and [(c.budget, c.policy, c.bits) for c in caches] == [(4, "window", 4)]
    code, _, err = run_cli(capsys, *argv, "--kv-budget", "64")
    assert code == 2 and "above the context" in err


def test_kv_bench_options(capsys, base, tmp_path):
    out = tmp_path / "bench.json"
    argv = ["bench", base, "--prompt-tokens", "32", "--new-tokens", "4", "--repeats", "1", "--quiet"]
    code, text, err = run_cli(
        capsys, *argv, "--kv-budget", "0.25", "--kv-policy", "d2o", "--kv-bits", "4", "--json", out
    )
    assert code == 0, err
    result = read_json(out)
    assert result["kv"]["policy"] == "d2o" and result["kv"]["cache_bytes"] < result["full"]["cache_bytes"] / 4
    assert result["kv"]["decode_speedup"] > 0 and "KV cache" in text


def test_kv_sweep_options(sweep_dir, tmp_path):
    """A sweep with --kv-* scores every point through the compressed cache (the converted model is reused)."""
    import shutil

    out = tmp_path / "kv-sweep"
    shutil.copytree(sweep_dir / "models", out / "models")
    argv = ["sweep", str(sweep_dir.parent / "base"), "--methods", "teal", "--budgets", "1", "-o", str(out)]
    assert main([*argv, "--windows", "1", *KV, "--quiet"]) == 0
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    quality = [r for r in records if "perplexity" in r]
    assert len(quality) == 2 and all(r["kv_policy"] == "h2o" and r["tokens"] == 256 for r in quality)


# --- the coverage table ----------------------------------------------------------------------------------------

COVERAGE = {
    ("quantize", "model"): "test_quantize_options",
    ("quantize", "--weights"): "test_quantize_options",
    ("quantize", "--threads"): "test_quantize_options",
    ("quantize", "--quiet"): "test_quantize_options",
    ("quantize", "--output"): "test_quantize_options",
    ("quantize", "--overwrite"): "test_quantize_options",
    ("demo", "--weights"): "test_weights_options",
    ("eval", "--weights"): "test_weights_options",
    ("bench", "--weights"): "test_weights_options",
    ("convert", "--weights"): "test_weights_options",
    ("export", "--weights"): "test_weights_options",
    ("sweep", "--weights"): "test_weights_options",
    ("report", "--weights"): "test_weights_options",
    ("inspect", "--weights"): "test_weights_options",
    ("oracle", "--weights"): "test_weights_options",
    ("generate", "--weights"): "test_weights_options",
    ("demo", "--activations"): "test_activations_options",
    ("eval", "--activations"): "test_activations_options",
    ("bench", "--activations"): "test_activations_options",
    ("convert", "--activations"): "test_activations_options",
    ("export", "--activations"): "test_activations_options",
    ("sweep", "--activations"): "test_activations_options",
    ("report", "--activations"): "test_activations_options",
    ("inspect", "--activations"): "test_activations_options",
    ("oracle", "--activations"): "test_activations_options",
    ("generate", "--activations"): "test_activations_options",
    ("serve", "--activations"): "test_activations_options",
    ("generate", "--hold-budget"): "test_generate_options",
    ("demo", "--model"): "test_demo_options",
    ("demo", "--dtype"): "test_loading_options",
    ("demo", "--threads"): "test_loading_options",
    ("demo", "--quiet"): "test_loading_options",
    ("demo", "--windows"): "test_demo_options",
    ("demo", "--method"): "test_demo_options",
    ("demo", "--budget"): "test_demo_options",
    ("demo", "--repeats"): "test_demo_options",
    ("demo", "--json"): "test_demo_options",
    ("eval", "model"): "test_eval_options",
    ("eval", "--dtype"): "test_loading_options",
    ("eval", "--threads"): "test_loading_options",
    ("eval", "--quiet"): "test_loading_options",
    ("eval", "--budget"): "test_eval_options",
    ("eval", "--policy"): "test_policy_reaches_the_routed_model",
    ("eval", "--data"): "test_eval_options",
    ("eval", "--windows"): "test_eval_options",
    ("eval", "--window-len"): "test_eval_options",
    ("eval", "--task"): "test_eval_task_options",
    ("eval", "--limit"): "test_eval_task_options",
    ("eval", "--batch-size"): "test_eval_task_options",
    ("eval", "--json"): "test_eval_options",
    ("eval", "--kv-budget"): "test_kv_eval_options",
    ("eval", "--kv-policy"): "test_kv_eval_options",
    ("eval", "--kv-bits"): "test_kv_eval_options",
    ("generate", "--speculative"): "test_speculative_generate_options",
    ("generate", "--draft"): "test_speculative_generate_options",
    ("generate", "--draft-tokens"): "test_speculative_generate_options",
    ("bench", "--speculative"): "test_speculative_bench_options",
    ("bench", "--draft"): "test_speculative_bench_options",
    ("bench", "--draft-tokens"): "test_speculative_bench_options",
    ("generate", "--kv-budget"): "test_kv_generate_options",
    ("generate", "--kv-policy"): "test_kv_generate_options",
    ("generate", "--kv-bits"): "test_kv_generate_options",
    ("bench", "--kv-budget"): "test_kv_bench_options",
    ("bench", "--kv-policy"): "test_kv_bench_options",
    ("bench", "--kv-bits"): "test_kv_bench_options",
    ("sweep", "--kv-budget"): "test_kv_sweep_options",
    ("sweep", "--kv-policy"): "test_kv_sweep_options",
    ("sweep", "--kv-bits"): "test_kv_sweep_options",
    ("bench", "model"): "test_bench_options",
    ("bench", "--dtype"): "test_loading_options",
    ("bench", "--threads"): "test_loading_options",
    ("bench", "--quiet"): "test_loading_options",
    ("bench", "--budgets"): "test_bench_options",
    ("bench", "--policy"): "test_policy_reaches_the_routed_model",
    ("bench", "--repeats"): "test_bench_options",
    ("bench", "--prompt-tokens"): "test_bench_options",
    ("bench", "--new-tokens"): "test_bench_options",
    ("bench", "--prefill-tokens"): "test_bench_options",
    ("bench", "--ceiling"): "test_bench_options",
    ("bench", "--json"): "test_bench_options",
    ("convert", "model"): "test_convert_budget_saves_and_eval_uses_it",
    ("convert", "--dtype"): "test_loading_options",
    ("convert", "--threads"): "test_loading_options",
    ("convert", "--quiet"): "test_loading_options",
    ("convert", "--method"): "test_convert_budget_saves_and_eval_uses_it",
    ("convert", "--output"): "test_convert_budget_saves_and_eval_uses_it",
    ("convert", "--overwrite"): "test_convert_options_reach_the_saved_model",
    ("convert", "--budget"): "test_convert_budget_saves_and_eval_uses_it",
    ("convert", "--calib"): "test_convert_budget_saves_and_eval_uses_it",
    ("convert", "--calib-tokens"): "test_convert_budget_saves_and_eval_uses_it",
    ("convert", "--min-budget"): "test_convert_options_reach_the_saved_model",
    ("convert", "--set"): "test_convert_set_reaches_the_method",
    ("convert", "--allocation"): "test_convert_options_reach_the_saved_model",
    ("convert", "--resume"): "test_convert_resume_continues_an_interrupted_conversion",
    ("export", "model"): "test_export_options",
    ("export", "--dtype"): "test_loading_options",
    ("export", "--threads"): "test_loading_options",
    ("export", "--quiet"): "test_loading_options",
    ("export", "--width"): "test_export_options",
    ("export", "--allocation"): "test_export_options",
    ("export", "--output"): "test_export_options",
    ("export", "--overwrite"): "test_export_options",
    ("sweep", "model"): "test_sweep_options",
    ("sweep", "--dtype"): "test_loading_options",
    ("sweep", "--threads"): "test_loading_options",
    ("sweep", "--quiet"): "test_loading_options",
    ("sweep", "--methods"): "test_sweep_options",
    ("sweep", "--budgets"): "test_sweep_options",
    ("sweep", "--output"): "test_sweep_options",
    ("sweep", "--windows"): "test_sweep_options",
    ("sweep", "--calib-tokens"): "test_sweep_options",
    ("sweep", "--task"): "test_sweep_options",
    ("sweep", "--task-limit"): "test_sweep_options",
    ("sweep", "--bench"): "test_sweep_options",
    ("sweep", "--repeats"): "test_sweep_options",
    ("report", "directory"): "test_report_options",
    ("report", "--method"): "test_report_options",
    ("report", "--budget"): "test_report_options",
    ("report", "--text"): "test_report_options",
    ("report", "--tokens"): "test_report_options",
    ("report", "--output"): "test_report_options",
    ("report", "--dtype"): "test_loading_options",
    ("report", "--threads"): "test_loading_options",
    ("report", "--quiet"): "test_loading_options",
    ("inspect", "model"): "test_inspect_options",
    ("inspect", "--dtype"): "test_loading_options",
    ("inspect", "--threads"): "test_loading_options",
    ("inspect", "--quiet"): "test_loading_options",
    ("inspect", "--budget"): "test_inspect_options",
    ("inspect", "--policy"): "test_inspect_options",
    ("inspect", "--data"): "test_inspect_options",
    ("inspect", "--tokens"): "test_inspect_options",
    ("inspect", "--json"): "test_inspect_options",
    ("oracle", "model"): "test_oracle_options",
    ("oracle", "--dtype"): "test_loading_options",
    ("oracle", "--threads"): "test_loading_options",
    ("oracle", "--quiet"): "test_loading_options",
    ("oracle", "--budget"): "test_oracle_options",
    ("oracle", "--data"): "test_oracle_options",
    ("oracle", "--tokens"): "test_oracle_options",
    ("oracle", "--small"): "test_oracle_options",
    ("oracle", "--json"): "test_oracle_options",
    ("generate", "model"): "test_generate_options",
    ("generate", "--dtype"): "test_loading_options",
    ("generate", "--threads"): "test_loading_options",
    ("generate", "--quiet"): "test_loading_options",
    ("generate", "prompt"): "test_generate_options",
    ("generate", "--max-new-tokens"): "test_generate_options",
    ("generate", "--budget"): "test_generate_options",
    ("generate", "--policy"): "test_policy_reaches_the_routed_model",
    ("generate", "--raw"): "test_generate_options",
    ("generate", "--show-compute"): "test_generate_options",
    ("serve", "model"): "test_serve_options",
    ("serve", "--dtype"): "test_loading_options",
    ("serve", "--threads"): "test_loading_options",
    ("serve", "--quiet"): "test_loading_options",
    ("serve", "--weights"): "test_serve_options",
    ("serve", "--budget"): "test_serve_options",
    ("serve", "--host"): "test_serve_options",
    ("serve", "--port"): "test_serve_options",
    ("serve", "--max-queue"): "test_serve_options",
    ("serve", "--timeout"): "test_serve_options",
}


def parser_options() -> dict[tuple[str, str], list[str]]:
    """(command, option) -> the option's spellings (none for a positional), for every option in `--help`."""
    parser = build_parser()
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {
        (name, max(action.option_strings, key=len) if action.option_strings else action.dest): action.option_strings
        for name, sub in commands.choices.items()
        for action in sub._actions
        if not isinstance(action, argparse._HelpAction)
    }


def source_with_fixtures(test) -> str:
    """A test's source, the tables of this module it reads (as `LOADING`), and the fixtures of this module it asks
    for, recursively."""
    sources, pending, seen = [], [test], set()
    module = sys.modules[__name__]
    while pending:
        function = pending.pop()
        function = getattr(function, "_get_wrapped_function", lambda f=function: f)()
        sources.append(inspect.getsource(function))
        tables = [getattr(module, name) for name in function.__code__.co_names if name.isupper()]
        sources += [json.dumps(table, default=str) for table in tables if isinstance(table, dict | list)]
        for name in inspect.signature(function).parameters:
            fixture = getattr(module, name, None)
            if fixture is not None and name not in seen:
                seen.add(name)
                pending.append(fixture)
    return "\n".join(sources)


def test_speculative_generate_options(capsys, base):
    """--speculative prints the plain greedy text and what the drafts bought; --draft and --draft-tokens set the
    drafts (layers on the quantized runtime); they are refused without --speculative or with what they cannot join."""
    prompt = "one two three one two three one two"
    argv = ["generate", base, prompt, "--max-new-tokens", "12", "--raw", "--quiet"]
    for weights in ([], ["--weights", "q8_0"]):
        code, plain, err = run_cli(capsys, *argv, *weights)
        assert code == 0, err
        code, out, err = run_cli(capsys, *argv, *weights, "--speculative", "--draft", "lookup", "--draft-tokens", "3")
        assert code == 0, err
        assert out.splitlines()[0] == plain.splitlines()[0]  # the same text
        assert "speculative:" in out and "up to 3 a pass, fixed" in " ".join(out.split())  # wrapped or not
    code, out, err = run_cli(capsys, *argv, "--weights", "q8_0", "--speculative", "--draft", "layers:0-1")
    assert code == 0, err
    assert "LayerDraft" in out and "chosen by measured cost" in " ".join(out.split())
    refused = {
        ("--draft", "lookup"): "add --speculative",
        ("--draft-tokens", "2"): "add --speculative",
        ("--speculative", "--draft", "layers:0"): "quantized runtime",
        ("--speculative", "--weights", "q8_0", "--draft", "layers:0-99"): "past the model's",
        ("--speculative", "--weights", "q8_0", "--draft", "layers:x"): "not a list of layers",
        ("--speculative", "--draft", "branch"): "unknown draft",
        ("--speculative", "--kv-budget", "4"): "--kv-*",
        ("--speculative", "--hold-budget"): "--hold-budget",
    }
    for extra, message in refused.items():
        code, _, err = run_cli(capsys, *argv, *extra)
        assert code == 2 and message in err, (extra, err)


def test_auto_budget_options(capsys, base, teal, tmp_path, monkeypatch):
    """`--budget auto:B` scores eval a token at a time and generates with each pass at its entropy bin's budget,
    calibrated once (then cached); a bare `auto`, an out-of-range mean and what it cannot join are refused."""
    monkeypatch.setenv("PONDER_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "auto.json"
    argv = ["eval", teal, "--budget", "auto:0.5", "--windows", "1", "--window-len", "32", "--json", out, "--quiet"]
    code, text, err = run_cli(capsys, *argv)
    assert code == 0, err
    result = read_json(out)
    assert result["budget"] == 0.5 and sum(result["levels"].values()) == 31 and "auto:0.5" in text
    levels = result["entropy_budget"]["levels"]
    assert sum(levels) / len(levels) == pytest.approx(0.5) and len(result["entropy_budget"]["edges"]) == 3
    assert len(list((tmp_path / "cache" / "entropy-budget").glob("*.json"))) == 1
    prompt = ["generate", teal, "one two three", "--max-new-tokens", "6", "--raw", "--quiet"]
    code, text, err = run_cli(capsys, *prompt, "--budget", "auto:0.5")
    assert code == 0, err
    assert "for auto:0.5 (passes at budgets" in " ".join(text.split())
    code, text, err = run_cli(capsys, *prompt, "--budget", "auto:0.5", "--show-compute")
    assert code == 0 and "for auto:0.5" in " ".join(text.split()), err
    refused = {
        ("--budget", "auto"): "auto:0.5",
        ("--budget", "auto:1.5"): "budget",
        ("--budget", "auto:0.5", "--hold-budget"): "--hold-budget",
        ("--budget", "auto:0.5", "--kv-budget", "4"): "--kv-*",
        ("--budget", "auto:0.5", "--weights", "q8_0"): "--weights",
        ("--budget", "auto:0.5", "--speculative"): "--speculative",
    }
    for extra, message in refused.items():
        code, _, err = run_cli(capsys, *prompt, *extra)
        assert code == 2 and message in err, (extra, err)
    code, _, err = run_cli(capsys, "generate", base, "one", "--budget", "auto:0.5", "--quiet")
    assert code == 2 and "adaptive model" in err
    code, _, err = run_cli(capsys, "bench", teal, "--budgets", "auto:0.5")
    assert code == 2 and "not a number" in err


def test_speculative_bench_options(capsys, base, tmp_path):
    """`bench --speculative` adds a `speculative` row timed beside dense, on fp32 and quantized weights."""
    argv = ["bench", base, "--prompt-tokens", "16", "--new-tokens", "8", "--prefill-tokens", "8", "--repeats", "1"]
    for weights in ([], ["--weights", "q8_0"]):
        out = tmp_path / "bench.json"
        code, text, err = run_cli(capsys, *argv, *weights, "--speculative", "--json", out, "--quiet")
        assert code == 0, err
        row = read_json(out)["speculative"]
        assert row["tokens_match_dense"] and row["decode_tok_s"] > 0 and row["decode_speedup"] > 0
        assert 0 <= row["acceptance_rate"] <= 1 and 1 <= row["tokens_per_verify"] <= row["k"] + 1
        assert row["k"] == 8 and row["k_adaptive"] and "same tokens as dense: yes" in " ".join(text.split())
    out = tmp_path / "fixed.json"
    code, _, err = run_cli(capsys, *argv, "--speculative", "--draft", "lookup", "--draft-tokens", "2", "--json", out)
    assert code == 0, err
    row = read_json(out)["speculative"]
    assert (row["k"], row["k_adaptive"], row["draft"]) == (2, False, "PromptLookup") and row["tokens_match_dense"]
    code, _, err = run_cli(capsys, *argv, "--speculative", "--ceiling")
    assert code == 2 and "--ceiling" in err


def test_quantize_options(base, tmp_path, capsys):
    out = tmp_path / "q"
    assert main(["quantize", str(base), "--weights", "q8_0", "-o", str(out), "--threads", "1", "--quiet"]) == 0
    assert (out / "ponder_quant.json").is_file()
    assert main(["quantize", str(base), "--weights", "q4_0", "-o", str(out)]) == 2  # exists
    assert "--overwrite" in capsys.readouterr().err
    assert main(["quantize", str(base), "--weights", "q4_0", "-o", str(out), "--overwrite"]) == 0
    assert read_json(out / "ponder_quant.json")["weights"] == "q4_0"


def test_weights_options(base, tmp_path, capsys):
    """--weights runs eval, generate and bench through the quantized runtime; the fp32-only commands refuse it."""
    text = tmp_path / "t.txt"
    text.write_text(load_text("wikitext2-valid")[:4000])
    assert main(["eval", str(base), "--weights", "q8_0", "--data", str(text), "--windows", "1", "--window-len", "64",
                 "--json", str(tmp_path / "e.json"), "--quiet"]) == 0  # fmt: skip
    assert read_json(tmp_path / "e.json")["weights"] == "q8_0"
    assert main(["generate", str(base), "hello", "--weights", "q4_1", "--max-new-tokens", "3", "--raw"]) == 0
    assert main(["bench", str(base), "--weights", "q4_0", "--repeats", "1", "--prompt-tokens", "4", "--new-tokens",
                 "2", "--prefill-tokens", "8", "--json", str(tmp_path / "b.json"), "--quiet"]) == 0  # fmt: skip
    assert read_json(tmp_path / "b.json")["weights"] == "q4_0"
    capsys.readouterr()
    refused = {
        "demo": ["demo", "--model", str(base)],
        "convert": ["convert", str(base), "--method", "teal", "-o", str(tmp_path / "c")],
        "export": ["export", str(base), "--width", "0.5", "-o", str(tmp_path / "x")],
        "sweep": ["sweep", str(base), "--methods", "teal", "-o", str(tmp_path / "s")],
        "report": ["report", str(tmp_path)],
        "inspect": ["inspect", str(base)],
        "oracle": ["oracle", str(base)],
    }
    for command, argv in refused.items():
        assert main([*argv, "--weights", "q4_1"]) == 2, command
        assert "--weights" in capsys.readouterr().err, command


def test_activations_options(base, tmp_path, capsys):
    """--activations picks the quantized runtime's matvec inputs; fp32 inputs score the blocks without rounding the
    activations (a different perplexity from int8's), and every command refuses it without --weights."""
    text = tmp_path / "t.txt"
    text.write_text(load_text("wikitext2-valid")[:4000])
    scored = {}
    for activations in QUANT_ACTIVATIONS:
        json_path = tmp_path / f"{activations}.json"
        assert main(["eval", str(base), "--weights", "q8_0", "--activations", activations, "--data", str(text),
                     "--windows", "1", "--window-len", "64", "--json", str(json_path), "--quiet"]) == 0  # fmt: skip
        scored[activations] = read_json(json_path)
        assert scored[activations]["activations"] == activations
    assert scored["int8"]["perplexity"] != scored["fp32"]["perplexity"]
    assert main(["generate", str(base), "hi", "--weights", "q4_1", "--activations", "fp32", "--max-new-tokens", "2",
                 "--raw"]) == 0  # fmt: skip
    assert main(["bench", str(base), "--weights", "q4_0", "--activations", "fp32", "--repeats", "1",
                 "--prompt-tokens", "4", "--new-tokens", "2", "--prefill-tokens", "8", "--json",
                 str(tmp_path / "b.json"), "--quiet"]) == 0  # fmt: skip
    assert read_json(tmp_path / "b.json")["activations"] == "fp32"
    capsys.readouterr()
    refused = {
        "demo": ["demo", "--model", str(base)],
        "eval": ["eval", str(base), "--data", str(text)],
        "bench": ["bench", str(base)],
        "convert": ["convert", str(base), "--method", "teal", "-o", str(tmp_path / "c")],
        "export": ["export", str(base), "--width", "0.5", "-o", str(tmp_path / "x")],
        "sweep": ["sweep", str(base), "--methods", "teal", "-o", str(tmp_path / "s")],
        "report": ["report", str(tmp_path)],
        "inspect": ["inspect", str(base)],
        "oracle": ["oracle", str(base)],
        "generate": ["generate", str(base), "hi"],
        "serve": ["serve", str(base)],
    }
    for command, argv in refused.items():
        assert main([*argv, "--activations", "fp32"]) == 2, command
        assert "--activations applies to quantized weights" in capsys.readouterr().err, command


def test_every_option_has_a_test():
    options = parser_options()
    assert set(COVERAGE) - set(options) == set(), "options in the table that the parser no longer has"
    assert set(options) - set(COVERAGE) == set(), "options without a test: add one and list it in COVERAGE"
    for (command, option), name in COVERAGE.items():
        source = source_with_fixtures(globals()[name])
        assert f'"{command}"' in source, f"{name} never runs `ponder {command}`"
        spellings = options[command, option]
        assert not spellings or any(f'"{s}"' in source for s in spellings), f"{name} never passes {option}"


def test_cli_page_shows_every_commands_current_help():
    """docs/cli.md's usage blocks are `ponder COMMAND --help`: regenerate with `python docs/cli_help.py`."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "docs" / "cli_help.py"
    spec = importlib.util.spec_from_file_location("cli_help", path)
    cli_help = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli_help)
    page = cli_help.PAGE.read_text()
    assert cli_help.render(page) == page, "docs/cli.md is stale: run python docs/cli_help.py"
    assert all(f"## `ponder {name}`" in page for name in COMMANDS)
