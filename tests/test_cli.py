"""The CLI contract: JSON keys, and one-line errors with exit code 2 and no partial output. Each option's effect is
tested in test_cli_options.py."""

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
        (("eval", "{model}", "--budget", "half"), "budget 'half' is not a number"),
        (("bench", "{model}", "--budgets", "0.5,1.5"), "budget 1.5 is outside (0, 1]"),
        (("bench", "{model}", "--budgets", ","), "has no budgets"),
        (("convert", "{model}", "--method", "teal", "-o", "{fresh}", "--min-budget", "2"), "outside (0, 1]"),
        (("eval", "{model}", "--policy", "top-q"), "unknown routing policy 'top-q'"),
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
