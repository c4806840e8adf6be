"""Cross-check the lm-eval model type `ponder` on a real model: lm-eval's PIQA scores against `ponder eval`'s.

Question: does lm-evaluation-harness score ponder models exactly as `ponder eval --task` does? About 5
minutes at --limit 200.

Runs lm-evaluation-harness (`simple_evaluate`, model type `ponder`) on the first N bundled PIQA items through
`ponder.harness.write_piqa_task`, then ponder's own scorer on the same items, and prints both accuracies and the
largest difference of any choice's log-likelihood.

    python benchmarks/harness_check.py smollm2-135m --limit 200
    python benchmarks/harness_check.py runs/teal --budget 0.5 --limit 200
"""

from __future__ import annotations

import argparse
import os
import tempfile

from ponder.adaptive import load, set_budget
from ponder.eval.tasks import evaluate_task, load_piqa, piqa_choices, score_choices


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--budget", type=float, default=None)
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from ponder.harness import PIQA_TASK, write_piqa_task

    budget = "" if args.budget is None else f",budget={args.budget}"
    with tempfile.TemporaryDirectory() as tmp:
        out = simple_evaluate(
            model="ponder",
            model_args=f"path={args.model}{budget},batch_size={args.batch_size}",
            tasks=[PIQA_TASK],
            task_manager=TaskManager(include_path=str(write_piqa_task(tmp, limit=args.limit))),
            log_samples=True,
            bootstrap_iters=0,
        )
    model, tokenizer = load(args.model)
    if args.budget is not None:
        set_budget(model, args.budget)
    ours = evaluate_task(model, tokenizer, "piqa", limit=args.limit, progress=False)
    choices = piqa_choices(tokenizer, load_piqa(limit=args.limit))
    scores = score_choices(model, choices, batch_size=args.batch_size, progress=False)
    samples = sorted(out["samples"][PIQA_TASK], key=lambda s: s["doc_id"])
    harness = [resp[0][0] for s in samples for resp in s["resps"]]
    gaps = [abs(a - b) for a, b in zip(harness, scores, strict=True)]
    metrics = out["results"][PIQA_TASK]
    print(f"model {args.model} budget {args.budget} items {args.limit}")
    print(f"lm-eval (model type ponder): acc {metrics['acc,none']:.4f} acc_norm {metrics['acc_norm,none']:.4f}")
    print(f"ponder eval --task piqa:     acc {ours.acc:.4f} acc_norm {ours.acc_norm:.4f}")
    print(f"largest |log-likelihood difference| over {len(scores)} choices: {max(gaps):.2e}")
    print(f"choices differing by more than 1e-3: {sum(g > 1e-3 for g in gaps)}")
    print(f"FFN compute lm-eval saw: {out['config']['ponder_ffn_compute']}; ponder: {ours.ffn_compute:.4f}")


if __name__ == "__main__":
    main()
