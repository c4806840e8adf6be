"""Zero-shot task accuracy: PIQA scored as lm-evaluation-harness does.

Protocol: context "Question: {goal}\\nAnswer:", continuations " {sol1}" and " {sol2}"; a choice's score is the
sum of its continuation tokens' log-probabilities given the context; `acc` picks the higher score, `acc_norm`
the higher score divided by the choice's length in UTF-8 bytes (the text without the leading space). Tokens of
a continuation are those of (context + continuation) beyond the context's own tokens, as lm-eval encodes pairs.
Sequences are batched by equal length, so no padding enters either the scores or the compute telemetry.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ponder.errors import DataError, PonderError
from ponder.stats import ComputeMeter

TASKS = ("piqa",)


def check_task(task: str) -> str:
    """The task name, or a clear error listing the bundled tasks."""
    if task not in TASKS:
        raise PonderError(f"unknown task '{task}': choose one of {', '.join(TASKS)}")
    return task


@dataclass
class TaskResult:
    task: str
    acc: float
    acc_norm: float
    acc_stderr: float
    acc_norm_stderr: float
    n: int
    ffn_compute: float
    """Achieved fraction of dense FFN FLOPs over every token forwarded (no padding exists)."""

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Choice:
    item: int
    context: list[int]
    continuation: list[int]
    length_bytes: int


def load_piqa(limit: int | None = None) -> list[dict]:
    """The bundled PIQA validation items with their `label`, in file order."""
    texts = Path(str(resources.files("ponder.data") / "texts"))
    items = [json.loads(line) for line in (texts / "piqa-valid.jsonl").read_text(encoding="utf-8").splitlines()]
    labels = (texts / "piqa-valid-labels.lst").read_text().split()
    if len(items) != len(labels):
        raise DataError(f"PIQA has {len(items)} items but {len(labels)} labels: reinstall ponder")
    for item, label in zip(items, labels, strict=True):
        item["label"] = int(label)
    if limit is not None:
        if limit <= 0:
            raise PonderError(f"limit must be a positive integer, got {limit}")
        items = items[:limit]
    return items


def encode_pair(tokenizer: PreTrainedTokenizerBase, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Context tokens and continuation tokens, split where lm-eval splits them."""
    whole = tokenizer(context + continuation, add_special_tokens=False).input_ids
    context_ids = tokenizer(context, add_special_tokens=False).input_ids
    return context_ids, whole[len(context_ids) :]


def piqa_choices(tokenizer: PreTrainedTokenizerBase, items: list[dict]) -> list[Choice]:
    choices = []
    for index, item in enumerate(items):
        context = f"Question: {item['goal']}\nAnswer:"
        for solution in (item["sol1"], item["sol2"]):
            context_ids, continuation_ids = encode_pair(tokenizer, context, " " + solution)
            choices.append(Choice(index, context_ids, continuation_ids, len(solution.encode("utf-8"))))
    return choices


@torch.inference_mode()
def score_choices(model: PreTrainedModel, choices: list[Choice], *, batch_size: int, progress: bool) -> list[float]:
    """Sum of continuation log-probabilities for each choice; sequences of one length share a forward pass."""
    by_length: dict[int, list[int]] = defaultdict(list)
    for index, choice in enumerate(choices):
        by_length[len(choice.context) + len(choice.continuation)].append(index)
    batches = [group[i : i + batch_size] for group in by_length.values() for i in range(0, len(group), batch_size)]
    scores = [0.0] * len(choices)
    for batch in tqdm(batches, desc="score", unit="batch", disable=not progress):
        ids = torch.tensor([choices[i].context + choices[i].continuation for i in batch])  # [B, L]
        log_probs = torch.log_softmax(model(ids).logits.float(), dim=-1)  # [B, L, V]
        for row, index in enumerate(batch):
            start = len(choices[index].context)
            targets = ids[row, start:]  # [C]
            predicted = log_probs[row, start - 1 : -1].gather(-1, targets[:, None])  # [C, 1]
            scores[index] = predicted.sum().item()
    return scores


def _stderr(hits: list[bool]) -> float:
    """Standard error of a mean of 0/1 outcomes, sample variance (lm-eval's mean_stderr)."""
    n = len(hits)
    p = sum(hits) / n
    return math.sqrt(p * (1 - p) / (n - 1)) if n > 1 else float("nan")


def evaluate_task(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    task: str,
    *,
    limit: int | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> TaskResult:
    """Zero-shot accuracy of `model` on `task` (only 'piqa' is bundled)."""
    check_task(task)
    items = load_piqa(limit)
    choices = piqa_choices(tokenizer, items)
    if any(not choice.context or not choice.continuation for choice in choices):
        raise DataError("a PIQA choice tokenized to nothing: check the tokenizer")
    with ComputeMeter(model) as meter:
        scores = score_choices(model, choices, batch_size=batch_size, progress=progress)
    hits, hits_norm = [], []
    for index, item in enumerate(items):
        first, second = choices[2 * index], choices[2 * index + 1]
        raw = (scores[2 * index], scores[2 * index + 1])
        norm = (raw[0] / first.length_bytes, raw[1] / second.length_bytes)
        hits.append(int(raw[1] > raw[0]) == item["label"])
        hits_norm.append(int(norm[1] > norm[0]) == item["label"])
    return TaskResult(
        task=task,
        acc=sum(hits) / len(hits),
        acc_norm=sum(hits_norm) / len(hits_norm),
        acc_stderr=_stderr(hits),
        acc_norm_stderr=_stderr(hits_norm),
        n=len(items),
        ffn_compute=meter.report.ffn_compute,
    )
