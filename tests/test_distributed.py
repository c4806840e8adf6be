"""Layer-parallel conversion on torch.distributed: two gloo ranks under torchrun write what one process writes."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

MOE = ("--method", "moe", "--set", "experts=16", "--set", "shared_experts=2", "--set", "steps=50")
TEAL_GREEDY = ("--method", "teal", "--allocation", "greedy")  # the loss measurements are split across ranks too
SKIP = ("--method", "skip", "--set", "steps=50")  # residual-stream capture; shared thresholds set after all layers


def _convert(launcher: list[str], model, output, options) -> subprocess.CompletedProcess:
    command = [*launcher, "-m", "ponder", "convert", str(model), "-o", str(output), *options, "--calib-tokens", "1536"]
    # One thread in every process, as torchrun gives each rank: on some CPUs (this one's AVX-512 BLAS) a GEMM's
    # result depends on how many threads split it, so equal thread counts are what "bit-equal" can promise.
    return subprocess.run([*command, "--threads", "1", "--quiet"], capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="this PyTorch has no torch.distributed")
@pytest.mark.parametrize("options", [MOE, TEAL_GREEDY, SKIP], ids=["moe", "teal-greedy", "skip"])
def test_two_gloo_ranks_equal_one_process(saved_model, tmp_path, options):
    one = _convert([sys.executable], saved_model, tmp_path / "one", options)
    assert one.returncode == 0, one.stderr
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    two = _convert(torchrun, saved_model, tmp_path / "two", options)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("converted") == 1  # only the main rank writes and reports
    assert not (tmp_path / ".two.partial").exists()
    expected, got = (load_file(str(tmp_path / d / "ponder_state.safetensors")) for d in ("one", "two"))
    assert expected.keys() == got.keys() and len(expected) >= 4
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    configs = [json.loads((tmp_path / d / "ponder_config.json").read_text()) for d in ("one", "two")]
    assert configs[0] == configs[1]
