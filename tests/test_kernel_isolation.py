"""Two decoders in one process do not interfere: the kernels keep no state another caller can see (each workspace
and each bound kernel has one owner), so interleaving two decoders' steps gives each exactly the logits it gives
alone, and callers with their own workspaces can even run kernels at once in two threads (ctypes lets the calls
overlap)."""

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from conftest import VOCAB, tiny_model
from ponder.adaptive import convert, set_budget
from ponder.inference import LeanDecoder
from ponder.kernels import native

pytestmark = pytest.mark.skipif(native.library() is None, reason="no C compiler: no kernels to share anything")


def _wide_llama():
    """A tiny Llama of other widths than conftest's (hidden 48, 96 neurons), so buffers sized for one are wrong for
    the other."""
    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)  # fmt: skip
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.fixture(scope="module")
def two_models(tokenizer):
    """cats (one-shot kernel calls with a module's workspace) on a 48-wide Llama at budget 0.5 and predictor (the
    gather kernel, likewise) on a 32-wide Qwen2 at 0.6."""
    first = convert(_wide_llama(), tokenizer, "cats", calibration_tokens=1024, progress=False)
    second = convert(tiny_model("qwen2"), tokenizer, "predictor", calibration_tokens=1024, progress=False)
    set_budget(first, 0.5)
    set_budget(second, 0.6)
    return first, second


@pytest.fixture(scope="module")
def two_budgets(tokenizer):
    """The same teal conversion twice, at budgets 0.4 and 0.7."""
    low, high = (
        convert(tiny_model("llama"), tokenizer, "teal", calibration_tokens=1024, progress=False) for _ in "ab"
    )
    set_budget(low, 0.4)
    set_budget(high, 0.7)
    return low, high


@torch.inference_mode()
def _logits(runner, ids: torch.Tensor) -> torch.Tensor:
    return runner.forward(ids).clone()  # [1, V]


def _steps(decoder: LeanDecoder, ids: torch.Tensor, new_tokens: int):
    """Yield the logits [1, V] of the prompt and of each greedy one-token step after it (no context manager held
    across a yield: two interleaved generators would unwind inference mode out of order)."""
    runner = decoder.runner
    runner.reset(1)
    logits = _logits(runner, ids)
    for _ in range(new_tokens):
        yield logits
        logits = _logits(runner, logits.argmax(-1, keepdim=True))


def _prompt(seed: int) -> torch.Tensor:
    return torch.randint(2, VOCAB, (1, 9), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("pair", ["two_models", "two_budgets"])
def test_interleaved_steps_equal_each_decoder_alone(pair, request):
    models = request.getfixturevalue(pair)
    decoders = [LeanDecoder(model, max_len=64) for model in models]
    alone = [list(_steps(decoder, _prompt(k), 16)) for k, decoder in enumerate(decoders)]
    together = zip(*(_steps(decoder, _prompt(k), 16) for k, decoder in enumerate(decoders)), strict=True)
    for step, logits in enumerate(together):
        for k in range(2):
            assert torch.equal(logits[k], alone[k][step]), f"decoder {k}, step {step}"
    assert not torch.equal(alone[0][-1], alone[1][-1])  # the two really differ


def test_callers_with_their_own_workspaces_run_at_once_in_two_threads():
    """The one-shot wrappers in two threads, each caller with its own workspace, give what each gives alone. FFNs
    this wide keep each call in C for about a millisecond, so the two threads' calls overlap (ctypes releases the
    GIL): with one workspace shared between them this test fails, as a module-level one did."""
    g = torch.Generator().manual_seed(0)
    F, D = 4096, 512
    gate, up, down_t = (torch.randn(F, D, generator=g) / 20 for _ in range(3))
    index = torch.arange(0, F, 2)  # half the neurons
    inputs = [torch.randn(D, generator=g) for _ in range(2)]

    def run(x: torch.Tensor, workspace: native.Workspace) -> list[torch.Tensor]:
        outputs = []
        for _ in range(25):
            outputs.append(native.glu_rows(x, gate, up, down_t, index, "silu", workspace=workspace))
            outputs.append(native.cats_ffn(x, gate, up, down_t, 0.05, "silu", workspace=workspace)[0])
        return outputs

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # each call on its own thread, so two calls can run at once on two cores
    try:
        alone = [run(x, native.Workspace())[:2] for x in inputs]
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(run, inputs, [native.Workspace(), native.Workspace()]))
    finally:
        torch.set_num_threads(before)
    for k, outputs in enumerate(results):
        for step, out in enumerate(outputs):
            assert torch.equal(out, alone[k][step % 2]), f"caller {k}, call {step}"
