"""Does an R-Sparse-style low-rank stand-in for teal's dropped inputs pay for itself? Relative FFN-output error of a
layer at equal FFN compute: plain teal (a = m = b) against teal keeping fewer entries plus a rank-k term
A·B·(dropped part) on both projections' inputs (plain SVD of the weight, or activation-aware: SVD of W·C^½ with C the
dropped part's covariance), fitted on 2,048 calibration tokens, measured on the next 2,048.

    python benchmarks/experiments/teal_lowrank.py DIR [--layers 3,15,25] [--budgets 0.5,0.35]
"""

from __future__ import annotations

import argparse

import torch
from teal_split import top_mask  # benchmarks/ is on sys.path when run as a script

from ponder.adaptive import adaptive_modules, load
from ponder.data import CALIB_DEFAULT, load_text
from ponder.train.capture import capture_ffn_inputs


def low_rank(weight: torch.Tensor, dropped: torch.Tensor, rank: int, aware: bool) -> tuple[torch.Tensor, ...]:
    """A [out, k], B [k, in] with A·B ≈ weight on inputs distributed like `dropped` [N, in]."""
    if not aware:
        u, s, vt = torch.linalg.svd(weight, full_matrices=False)
        return u[:, :rank] * s[:rank], vt[:rank]
    values, vectors = torch.linalg.eigh(dropped.T @ dropped / len(dropped) + 1e-6 * torch.eye(dropped.shape[1]))
    root = vectors * values.clamp_min(1e-8).sqrt() @ vectors.T
    inverse_root = vectors * values.clamp_min(1e-8).rsqrt() @ vectors.T
    u, s, vt = torch.linalg.svd(weight @ root, full_matrices=False)
    return u[:, :rank] * s[:rank], vt[:rank] @ inverse_root


def sparse_ffn(module, x: torch.Tensor, keep: float, stand_ins=None) -> torch.Tensor:
    """The layer's FFN keeping each token's top `keep` of x and of the intermediate, plus the rank-k stand-ins
    ((A, B) for gate/up, (A, B) for down) of what was dropped."""
    gate_up, F = torch.cat([module.gate, module.up]), module.up.shape[0]  # [2F, D]
    kept = top_mask(x, keep)
    pre = (x * kept) @ gate_up.T
    if stand_ins:
        pre += (x * ~kept) @ stand_ins[0][1].T @ stand_ins[0][0].T
    h = module.act(pre[:, :F]) * pre[:, F:]
    kept_h = top_mask(h, keep)
    out = (h * kept_h) @ module.down.T
    if stand_ins:
        out += (h * ~kept_h) @ stand_ins[1][1].T @ stand_ins[1][0].T
    return out


def relative_error(out: torch.Tensor, dense: torch.Tensor) -> float:
    return ((out - dense).norm(dim=1) / dense.norm(dim=1)).mean().item()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dir", help="a converted SwiGLU model (its dense weights are used)")
    parser.add_argument("--layers", default="3,15,25")
    parser.add_argument("--budgets", default="0.5,0.35")
    args = parser.parse_args()
    model, tokenizer = load(args.dir)
    modules = adaptive_modules(model)
    inputs = capture_ffn_inputs(model, tokenizer, load_text(CALIB_DEFAULT), tokens=4096, progress=False)
    for layer in (int(v) for v in args.layers.split(",")):
        module = modules[layer]
        fit, test = inputs[layer][:2048], inputs[layer][2048:]
        gate_up = torch.cat([module.gate, module.up])  # [2F, D]
        D, F = module.up.shape[1], module.up.shape[0]

        with torch.no_grad():
            dense = module.dense_forward(test)
            for budget in (float(v) for v in args.budgets.split(",")):
                plain = relative_error(sparse_ffn(module, test, budget), dense)
                print(f"layer {layer:2d}  b = {budget}:  plain teal {plain:.3f}")
                for rank in (16, 32, 64):
                    keep = budget - rank * (D + 2 * F + F + D) / (3 * F * D)  # the stand-ins' MACs paid in entries
                    for aware in (False, True):
                        kept = top_mask(fit, keep)
                        pre = fit @ gate_up.T
                        h = module.act(pre[:, :F]) * pre[:, F:]
                        stand_ins = (
                            low_rank(gate_up, fit * ~kept, rank, aware),
                            low_rank(module.down, h * ~top_mask(h, keep), rank, aware),
                        )
                        print(f"    rank {rank:2d} {'aware' if aware else 'plain'}, keep {keep:.3f}: "
                              f"{relative_error(sparse_ffn(module, test, keep, stand_ins), dense):.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
