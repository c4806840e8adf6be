"""A few checks on the real embedded default model (SmolLM2-135M-Instruct, GGUF dequantized to fp32)."""

import pytest
import torch
from transformers import GenerationConfig

from ponder.data import load_text
from ponder.eval import perplexity
from ponder.inference import LeanDecoder
from ponder.models import DEFAULT_MODEL, load
from ponder.timing import prompt_ids

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def smollm():
    return load(DEFAULT_MODEL)


def test_loads_as_llama_with_tied_embeddings(smollm):
    model, tokenizer = smollm
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 30
    assert model.dtype == torch.float32
    assert tokenizer("Hello", add_special_tokens=False).input_ids == [19556]


def test_two_window_perplexity(smollm):
    # 20 windows give 23.29 (README); the first two alone give 20.21.
    result = perplexity(*smollm, load_text("wikitext2"), windows=2, progress=False)
    assert result.perplexity == pytest.approx(20.21, abs=0.01)
    assert result.ffn_compute == 1.0


def test_lean_decode_equals_hf_generate(smollm):
    model, tokenizer = smollm
    ids = prompt_ids(tokenizer, 64)
    config = GenerationConfig(max_new_tokens=32, do_sample=False, eos_token_id=[], pad_token_id=2)
    with torch.no_grad():
        expected = model.generate(ids, generation_config=config)
    assert torch.equal(LeanDecoder(model).generate(ids, 32), expected)
