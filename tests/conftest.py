"""Tiny random-weight models of every supported family, and a small real tokenizer, built in-process."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    GemmaConfig,
    GPT2Config,
    LlamaConfig,
    MistralConfig,
    OPTConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen3Config,
)

from ponder.data import load_text
from ponder.train import tune

VOCAB = 256
_COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    eos_token_id=1,
    bos_token_id=0,
    pad_token_id=1,
)
CONFIGS = {
    "llama": lambda: LlamaConfig(**_COMMON),
    "mistral": lambda: MistralConfig(**_COMMON, sliding_window=None),
    "qwen2": lambda: Qwen2Config(**_COMMON),
    "qwen3": lambda: Qwen3Config(**_COMMON, head_dim=8),
    "gemma": lambda: GemmaConfig(**_COMMON, head_dim=8),
    "gpt2": lambda: GPT2Config(
        vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=512, eos_token_id=1, bos_token_id=0
    ),
}
FAMILIES = list(CONFIGS)
ROPE_FAMILIES = ["llama", "mistral", "qwen2", "qwen3"]


def tiny_model(family: str, seed: int = 0):
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(CONFIGS[family]())
    model.eval()
    return model


def kill_tuning_in_step(monkeypatch, step: int) -> None:
    """Make the end-to-end phase (`ponder.train.tune`) raise KeyboardInterrupt during step `step` (0-based), as a
    kill would; `monkeypatch.undo()` revives it."""
    original, calls = tune._comparison, []

    def comparison(model, rows: torch.Tensor):
        outputs, divergence = original(model, rows)

        def dying(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
            calls.append(1)
            if len(calls) == step + 1:
                raise KeyboardInterrupt
            return divergence(teacher, student)

        return outputs, dying

    monkeypatch.setattr(tune, "_comparison", comparison)


def tiny_unsupported_model():
    torch.manual_seed(0)
    config = OPTConfig(vocab_size=VOCAB, hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4)
    return AutoModelForCausalLM.from_config(config)


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE of VOCAB tokens trained on calibration text in a second."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator([load_text("wikitext2-valid")[:20000]], trainer)
    from tokenizers import decoders

    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="</s>")


@pytest.fixture(params=FAMILIES)
def family(request) -> str:
    return request.param


@pytest.fixture
def saved_model(tmp_path, tokenizer):
    """A tiny Llama and its tokenizer saved as an HF directory."""
    path = tmp_path / "tiny-llama"
    tiny_model("llama").save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
