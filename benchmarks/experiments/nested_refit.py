"""Can a closed-form refit make importance-ordered prefixes (nested learners) good without training?

On FFN inputs captured from dense SmolLM2 (calibration: `wikitext2-valid`, held out: the first 1,024 tokens of
`wikitext2` test), for selected layers: the relative output error mean ‖y − ŷ‖/‖y‖ of a prefix of the neurons
(importance order as `nested` sorts them) when its down projection is
- truncated (what `nested` runs),
- refit per width by ridge least squares towards the original rows (tokens weighted by 1/‖y‖, so the fit targets
  the relative error), which needs one down copy per width, or
- refit jointly for all 16 prefixes at once (one shared down matrix, what a nested executor could keep).

    python benchmarks/experiments/nested_refit.py [--layers 5,15,25] [--tokens 8192]
"""

from __future__ import annotations

import argparse

import torch

from ponder import load
from ponder.adaptive import replace_ffns
from ponder.data import load_text
from ponder.methods import get_method
from ponder.train.capture import capture_ffn_inputs

LEARNERS = 16
RIDGE = 0.1  # of the mean Gram diagonal; 0.01-1 all within 0.02 of each other


def relative_error(predicted: torch.Tensor, target: torch.Tensor) -> float:
    return float(((predicted - target).norm(dim=-1) / target.norm(dim=-1)).mean())


def ridge_towards(gram: torch.Tensor, cross: torch.Tensor, start: torch.Tensor, ridge: float) -> torch.Tensor:
    """argmin_W ‖H W − Y‖² + ridge ‖W − start‖², from the Gram matrix HᵀH and HᵀY."""
    eye = torch.eye(len(gram), dtype=gram.dtype)
    return start + torch.linalg.solve(gram + ridge * gram.diagonal().mean() * eye, cross - gram @ start)


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", default="5,15,25")
    parser.add_argument("--tokens", type=int, default=8192)
    args = parser.parse_args()
    model, tokenizer = load("smollm2-135m")
    calib = capture_ffn_inputs(model, tokenizer, load_text("wikitext2-valid"), tokens=args.tokens, progress=False)
    test = capture_ffn_inputs(model, tokenizer, load_text("wikitext2"), tokens=1024, progress=False)
    modules = replace_ffns(model, "nested", get_method("nested").config_class())
    print("layer width truncated per-width-refit joint-refit")
    for layer in map(int, args.layers.split(",")):
        module = modules[layer]
        h, h_test = module.intermediate(calib[layer]), module.intermediate(test[layer])  # [N, F]
        y, y_test = module.output(h), module.output(h_test)  # [N, D]
        order = (h.square().mean(0) * module.down.square().sum(0)).argsort(descending=True)
        h, h_test, down = h[:, order], h_test[:, order], module.down.t()[order]  # down: [F, D]
        weights = 1 / y.norm(dim=-1, keepdim=True)  # [N, 1]
        gram, cross = (h * weights).T @ (h * weights), (h * weights).T @ (y * weights)  # [F, F], [F, D]
        block = torch.arange(len(down)) // (len(down) // LEARNERS)  # learner of each neuron
        shared = (LEARNERS - torch.maximum(block[:, None], block[None, :])).float()  # prefixes holding both
        joint = ridge_towards(gram * shared, cross * (LEARNERS - block).float()[:, None], down, RIDGE)
        for width in (0.25, 0.5, 0.75, 1.0):
            k = int(len(down) * width)
            refit = ridge_towards(gram[:k, :k], cross[:k], down[:k], RIDGE) if width < 1 else down
            errors = [relative_error(h_test[:, :k] @ w[:k], y_test) for w in (down, refit, joint)]
            print(f"{layer:5d} {width:5.2f} " + " ".join(f"{e:9.3f}" for e in errors))


if __name__ == "__main__":
    main()
