"""The lm-eval model type `ponder` scores a local task exactly as `ponder eval --task piqa` does."""

import pytest

from ponder.adaptive import convert, load, save_adaptive, set_budget
from ponder.eval.tasks import evaluate_task, load_piqa, piqa_choices, score_choices

lm_eval = pytest.importorskip("lm_eval", reason="lm-evaluation-harness not installed (pip install 'ponder[lm-eval]')")

ITEMS = 5
BUDGET = 0.5


@pytest.fixture
def local_task(tmp_path):
    """PIQA's first items as an lm-eval task file reading a local JSON file (lm-eval's own task needs the hub)."""
    from ponder.harness import write_piqa_task

    return write_piqa_task(tmp_path / "tasks", limit=ITEMS)


@pytest.fixture
def converted(tmp_path, saved_model):
    model, tokenizer = load(str(saved_model))
    convert(model, tokenizer, "teal", calibration_tokens=512, progress=False)
    save_adaptive(model, tmp_path / "teal", base_model=str(saved_model))
    return tmp_path / "teal"


def test_adapter_matches_ponder_eval(converted, local_task, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from ponder.harness import PIQA_TASK  # importing registers the model type

    out = simple_evaluate(
        model="ponder",
        model_args=f"path={converted},budget={BUDGET},batch_size=4",
        tasks=[PIQA_TASK],
        task_manager=TaskManager(include_path=str(local_task)),
        log_samples=True,
        bootstrap_iters=0,
    )
    model, tokenizer = load(str(converted))
    set_budget(model, BUDGET)
    expected = evaluate_task(model, tokenizer, "piqa", limit=ITEMS, progress=False)
    scores = score_choices(model, piqa_choices(tokenizer, load_piqa(limit=ITEMS)), batch_size=1, progress=False)

    metrics = out["results"][PIQA_TASK]
    assert metrics["acc,none"] == pytest.approx(expected.acc)
    assert metrics["acc_norm,none"] == pytest.approx(expected.acc_norm)
    samples = sorted(out["samples"][PIQA_TASK], key=lambda s: s["doc_id"])
    harness_scores = [resp[0][0] for s in samples for resp in s["resps"]]
    assert harness_scores == pytest.approx(scores, rel=1e-4, abs=1e-4)
    config = out["config"]
    assert config["ponder_method"] == "teal" and config["ponder_budget"] == BUDGET
    assert config["ponder_ffn_compute"] < 0.9  # the budget was in force while lm-eval scored
