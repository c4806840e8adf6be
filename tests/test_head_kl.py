"""The end-to-end phase's chunked loss through the output head equals the plain KL over whole logits."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from transformers import AutoModelForCausalLM, Gemma2Config

from conftest import FAMILIES, VOCAB, tiny_model
from ponder.train import tune
from ponder.train.head_kl import head_kl, logits_kl


def _both(tokens: int, width: int, vocab: int, bias: bool, chunk: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    head = nn.Linear(width, vocab, bias=bias).requires_grad_(False)
    with torch.no_grad():
        head.weight.copy_(torch.randn(vocab, width, generator=generator))
        if bias:
            head.bias.copy_(torch.randn(vocab, generator=generator))
    teacher = torch.randn(2, tokens, width, generator=generator)
    student = (teacher + 0.3 * torch.randn(2, tokens, width, generator=generator)).requires_grad_(True)
    chunked = head_kl(teacher, student, head, chunk=chunk)
    (grad_chunked,) = torch.autograd.grad(3.0 * chunked, student)
    plain = logits_kl(head(teacher), head(student))
    (grad_plain,) = torch.autograd.grad(3.0 * plain, student)
    return chunked, plain, grad_chunked, grad_plain


@settings(max_examples=25, deadline=None)
@given(
    tokens=st.integers(1, 40),
    vocab=st.integers(2, 300),
    bias=st.booleans(),
    chunk=st.integers(1, 50),
    seed=st.integers(0, 10_000),
)
def test_head_kl_equals_the_kl_of_whole_logits(tokens, vocab, bias, chunk, seed):
    chunked, plain, grad_chunked, grad_plain = _both(tokens, 16, vocab, bias, chunk, seed)
    assert chunked.item() == pytest.approx(plain.item(), rel=1e-4, abs=1e-6)
    torch.testing.assert_close(grad_chunked, grad_plain, rtol=1e-4, atol=1e-6)


def test_head_kl_refuses_a_trainable_head():
    head = nn.Linear(4, 8)
    with pytest.raises(ValueError, match="freeze"):
        head_kl(torch.zeros(3, 4), torch.zeros(3, 4), head)


@pytest.mark.parametrize("family", FAMILIES)
def test_phase_compares_final_hidden_states_where_logits_are_a_linear_head(family):
    model = tiny_model(family).requires_grad_(False)  # as the phase freezes it
    rows = torch.randint(0, VOCAB, (2, 16))
    outputs, divergence = tune._comparison(model, rows)
    assert outputs(rows).shape[-1] == model.config.hidden_size  # hidden states, not logits
    with torch.no_grad():
        other = model(rows.flip(0)).logits
        plain = logits_kl(model(rows).logits, other)
        hidden = model.base_model(rows.flip(0)).last_hidden_state
    assert divergence(outputs(rows), hidden).item() == pytest.approx(plain.item(), rel=1e-4)


def test_phase_falls_back_to_whole_logits_where_the_head_is_not_linear():
    torch.manual_seed(0)
    shape = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, head_dim=8)
    config = Gemma2Config(**shape, num_attention_heads=4, num_key_value_heads=2, final_logit_softcapping=2.0)
    model = AutoModelForCausalLM.from_config(config).eval()
    rows = torch.randint(0, VOCAB, (1, 16))
    outputs, divergence = tune._comparison(model, rows)
    assert divergence is logits_kl
    assert outputs(rows).shape[-1] == VOCAB
