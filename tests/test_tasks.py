"""PIQA scoring: equals a hand computation, batching does not change it, acc_norm divides by UTF-8 bytes."""

import math

import pytest
import torch

from conftest import tiny_model
from ponder.errors import PonderError
from ponder.eval.tasks import encode_pair, evaluate_task, load_piqa, piqa_choices, score_choices


def hand_score(model, tokenizer, context, continuation):
    whole = tokenizer(context + continuation, add_special_tokens=False).input_ids
    n_context = len(tokenizer(context, add_special_tokens=False).input_ids)
    with torch.no_grad():
        log_probs = torch.log_softmax(model(torch.tensor([whole])).logits[0].double(), dim=-1)
    return sum(log_probs[t - 1, whole[t]].item() for t in range(n_context, len(whole)))


def test_bundled_piqa():
    items = load_piqa()
    assert len(items) == 1838
    assert {item["label"] for item in items} == {0, 1}
    assert items[0]["goal"].startswith("How do I ready a guinea pig cage")


def test_scores_equal_hand_computation(tokenizer):
    model = tiny_model("llama")
    items = load_piqa(limit=3)
    choices = piqa_choices(tokenizer, items)
    scores = score_choices(model, choices, batch_size=8, progress=False)
    for index, item in enumerate(items):
        context = f"Question: {item['goal']}\nAnswer:"
        for k, solution in enumerate((item["sol1"], item["sol2"])):
            expected = hand_score(model, tokenizer, context, " " + solution)
            assert scores[2 * index + k] == pytest.approx(expected, rel=1e-4, abs=1e-4)


def test_batched_equals_unbatched(tokenizer):
    model = tiny_model("qwen2")
    choices = piqa_choices(tokenizer, load_piqa(limit=25))
    one = score_choices(model, choices, batch_size=1, progress=False)
    many = score_choices(model, choices, batch_size=64, progress=False)
    assert many == pytest.approx(one, rel=1e-5, abs=1e-4)


def test_acc_norm_divides_by_utf8_bytes(tokenizer):
    item = {"goal": "g", "sol1": "café", "sol2": "cafe"}
    first, second = piqa_choices(tokenizer, [item])
    assert (first.length_bytes, second.length_bytes) == (5, 4)  # é is two bytes
    assert first.length_bytes != len(item["sol1"])


def test_continuation_split_like_lm_eval(tokenizer):
    context, continuation = encode_pair(tokenizer, "Question: x\nAnswer:", " an answer")
    whole = tokenizer("Question: x\nAnswer: an answer", add_special_tokens=False).input_ids
    assert context + continuation == whole and continuation


def test_limited_run_is_deterministic_and_reports_stderr(tokenizer):
    model = tiny_model("llama", seed=3)
    a = evaluate_task(model, tokenizer, "piqa", limit=20, progress=False)
    b = evaluate_task(model, tokenizer, "piqa", limit=20, batch_size=3, progress=False)
    assert a == b
    assert a.n == 20 and a.ffn_compute == 1.0
    assert a.acc_stderr == pytest.approx(math.sqrt(a.acc * (1 - a.acc) / 19))


def test_task_errors(tokenizer):
    with pytest.raises(PonderError, match="unknown task 'mmlu'"):
        evaluate_task(tiny_model("llama"), tokenizer, "mmlu")
    with pytest.raises(PonderError, match="positive"):
        load_piqa(limit=0)
