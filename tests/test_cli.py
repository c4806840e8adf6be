"""The CLI contract: JSON keys, and one-line errors with exit code 2 and no partial output."""

import json
import subprocess
import sys

import pytest

from conftest import tiny_unsupported_model
from ponder.cli import COMMANDS, main
from ponder.kernels import native


def run_cli(capsys, *argv):
    capsys.readouterr()  # drop what fixtures printed (progress bars of save_pretrained)
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_eval_json_has_contract_keys(capsys, saved_model, tmp_path):
    out_file = tmp_path / "eval.json"
    args = ("eval", str(saved_model), "--windows", "2", "--window-len", "64", "--json", str(out_file), "--quiet")
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    result = json.loads(out_file.read_text())
    assert {"perplexity", "ffn_compute", "tokens", "budget", "method"} <= result.keys()
    assert result["tokens"] == 2 * 63
    assert result["ffn_compute"] == 1.0
    assert "perplexity" in out


def test_bench_json_has_contract_keys(capsys, saved_model, tmp_path):
    out_file = tmp_path / "bench.json"
    args = ("bench", str(saved_model), "--repeats", "1", "--new-tokens", "4", "--prefill-tokens", "32", "--ceiling")
    code, _, err = run_cli(capsys, *args, "--json", str(out_file), "--quiet")
    assert code == 0, err
    result = json.loads(out_file.read_text())
    assert result["dense"]["decode_tok_s"] > 0 and result["dense"]["prefill_tok_s"] > 0
    assert result["hf_generate"]["decode_tok_s"] > 0
    assert result["budgets"] == []
    assert result["tokens_match_hf"] is True
    screened = result["lean_path"] == "native" and native.library() is not None
    assert result["greedy_head"] == ("int8-screened" if screened else "fp32")


def test_generate_prints_text(capsys, saved_model):
    code, out, err = run_cli(capsys, "generate", str(saved_model), "The river", "--max-new-tokens", "5", "--quiet")
    assert code == 0, err
    assert "tok/s" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("eval", "/no/such/model"), "not found"),
        (("eval", "no-such-alias"), "use an alias"),
        (("eval", "{model}", "--dtype", "fp7"), "unknown dtype 'fp7'"),
        (("eval", "{model}", "--windows", "0"), "--windows: must be a positive integer"),
        (("eval", "{model}", "--windows", "-3"), "--windows: must be a positive integer"),
        (("eval", "{model}", "--data", "{empty}"), "is empty"),
        (("eval", "{model}", "--data", "{short}"), "text too short"),
        (("eval", "{model}", "--budget", "0"), "outside (0, 1]"),
        (("eval", "{model}", "--budget", "0.5"), "convert it first"),
        (("bench", "{model}", "--budgets", "0.5"), "convert it first"),
        (("eval", "{opt}"), "model type 'opt' is not supported"),
        (("frobnicate",), "invalid choice"),
        (("convert", "{model}", "--method", "nope", "-o", "{fresh}"), "unknown method 'nope'"),
        (("convert", "{model}", "--method", "teal", "-o", "{opt}"), "exists: pass --overwrite"),
        (("convert", "{model}", "--method", "teal", "-o", "{fresh}", "--calib", "{empty}"), "is empty"),
        (("convert", "{model}", "--method", "teal", "-o", "{fresh}", "--calib-tokens", "100"), "less than one"),
        (("convert", "{model}", "--method", "teal", "-o", "{fresh}", "--set", "split=best"), "split must be"),
        (("eval", "{corrupt}"), "unreadable"),
        (("eval", "{model}", "--task", "mmlu"), "unknown task 'mmlu'"),
        (("demo", "--model", "{model}", "--method", "nope"), "unknown method 'nope'"),
        (("convert", "{model}", "--method", "moe", "-o", "{fresh}", "--set", "experts"), "not KEY=VALUE"),
        (("convert", "{model}", "--method", "moe", "-o", "{fresh}", "--set", "wings=2"), "no option 'wings'"),
        (("convert", "{model}", "--method", "moe", "-o", "{fresh}", "--set", "policy=top-q"), "policy must be"),
        (("convert", "{model}", "--method", "moe", "-o", "{partial}"), "pass --resume"),
        (("eval", "{model}", "--policy", "top-k"), "no routing policies"),
        (("inspect", "{model}", "--data", "{empty}"), "is empty"),
    ],
)
def test_errors_are_one_line_exit_2_no_output(capsys, tmp_path, saved_model, argv, message):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "short.txt").write_text("just a few words here")
    tiny_unsupported_model().save_pretrained(tmp_path / "opt")
    names = {"model": saved_model, "empty": tmp_path / "empty.txt", "short": tmp_path / "short.txt"}
    names["opt"] = tmp_path / "opt"
    names["fresh"] = tmp_path / "converted"
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "ponder_config.json").write_text("{not json")
    names["corrupt"] = tmp_path / "corrupt"
    (tmp_path / ".interrupted.partial").mkdir()  # what a killed `convert -o interrupted` leaves
    names["partial"] = tmp_path / "interrupted"
    out_file = tmp_path / "out.json"
    argv = [part.format(**names) for part in argv]
    if argv[0] in ("eval", "bench", "inspect"):
        argv += ["--json", str(out_file)]
    if argv[0] in COMMANDS:
        argv.append("--quiet")  # stderr holds the error line alone, no loading bars
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ponder: error:"), err
    assert message in lines[0]
    assert not out_file.exists()
    assert not names["fresh"].exists()


def test_console_entry_point_has_no_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "ponder", "eval", "/no/such/model"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("ponder: error:")


def test_demo_runs_the_whole_chain_on_a_tiny_model(capsys, saved_model, tmp_path):
    """load -> eval -> convert -> eval at a budget -> bench, as `ponder demo` does on the default model."""
    out_file = tmp_path / "demo.json"
    args = (
        "demo",
        "--model",
        str(saved_model),
        "--windows",
        "1",
        "--repeats",
        "1",
        "--quiet",
        "--json",
        str(out_file),
    )
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    result = json.loads(out_file.read_text())
    dense, sparse = result["eval"]
    assert (dense["method"], sparse["method"], sparse["budget"]) == ("dense", "teal", 0.5)
    assert sparse["ffn_compute"] == pytest.approx(0.5, abs=0.1)
    [row] = result["bench"]["budgets"]
    assert row["budget"] == 0.5 and row["decode_tok_s"] > 0
    assert "demo finished" in out


def test_moe_convert_resume_inspect_and_policy(capsys, saved_model, tmp_path):
    """convert with options → the work directory is gone → inspect and eval with a policy, JSON written."""
    out = tmp_path / "moe"
    options = ("--set", "experts=16", "--set", "shared_experts=2", "--set", "steps=50", "--calib-tokens", "1024")
    code, _, err = run_cli(capsys, "convert", str(saved_model), "--method", "moe", "-o", str(out), *options, "--quiet")
    assert code == 0, err
    assert not (tmp_path / ".moe.partial").exists()  # captured shards and layer checkpoints removed on success
    config = json.loads((out / "ponder_config.json").read_text())
    assert config["config"]["experts"] == 16 and config["method"] == "moe"
    report = tmp_path / "inspect.json"
    args = ("inspect", str(out), "--budget", "0.5", "--policy", "top-k", "--tokens", "200", "--json", str(report))
    code, text, err = run_cli(capsys, *args, "--quiet")
    assert code == 0, err
    result = json.loads(report.read_text())
    assert result["tokens"] == 200 and result["policy"] == "top-k" and len(result["layers"]) == 2
    layer = result["layers"][0]
    assert sum(layer["histogram"]) == 200 and len(layer["load"]) == 14
    assert sum(result["pseudo_share"].values()) == pytest.approx(1.0)
    assert "experts per token" in text
    code, _, err = run_cli(capsys, "eval", str(out), "--budget", "0.5", "--policy", "top-p", "--windows", "1",
                           "--window-len", "64", "--quiet")  # fmt: skip
    assert code == 0, err
