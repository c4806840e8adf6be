"""Would an orthogonal change of basis of the FFN input make teal's magnitude thresholding lose less?

Relative FFN-output error per layer at equal FFN compute, keeping a fraction a of the gate/up inputs and m of the
intermediate ((2a + m) / 3 = b for a GLU, a searched as teal does), on captured SmolLM2 inputs:

- `standard`: teal as it is (thresholds on x).
- `layer-pca`: x rotated into its own layer's principal axes (x' = x Q_l) before thresholding; the rotation is a
  D x D product per token, D / 3F = 12.5 % of the FFN, paid from the budget (`free`: not paid, the ceiling).
- `global-pca`: one rotation Q of the whole residual stream (free at run time once folded into every weight that
  reads or writes it, as in SliceGPT / QuaRot); the FFN reads z' = RMSNorm(h) Q with the norm's weight folded into
  gate/up, thresholded on |z'| times a per-channel scale (the folded weight's column norm; a scale is free too: it
  becomes the norm's weight).

Principal axes are fitted on one part of the calibration text and errors measured on another.

    python benchmarks/experiments/teal_rotation.py [--layers 0,3,9,15,21,25,29] [--budgets 0.5,0.35]
"""

from __future__ import annotations

import argparse

import torch

from ponder.adaptive import load
from ponder.data import CALIB_DEFAULT, load_text
from ponder.models.targets import architecture_of, decoder_layers
from ponder.train.capture import capture_ffn_inputs

OFFSETS = (-0.1, -0.05, 0.0, 0.05, 0.1, 0.15)


def top_mask(scores: torch.Tensor, keep: float) -> torch.Tensor:
    """Each row's round(keep · width) largest scores."""
    k = max(1, round(keep * scores.shape[1]))
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(1, scores.topk(k, dim=1).indices, True)


def axes(x: torch.Tensor) -> torch.Tensor:
    """Eigenvectors of the (uncentred) second moment of the rows of x, largest first: [D, D]."""
    moment = (x.T.double() @ x.double()) / x.shape[0]
    _, vectors = torch.linalg.eigh(moment)
    return vectors.flip(1).float()


def best_error(
    x_basis: torch.Tensor, scale: torch.Tensor, back: torch.Tensor, mlp, dense: torch.Tensor, budget: float
) -> tuple[float, float]:
    """Smallest mean relative output error over the splits (and the kept fraction a of x it used), keeping each
    token's top a of |x_basis|·scale, mapping back to the FFN's input by `back` ([D, D])."""
    best = (float("inf"), 0.0)
    for offset in OFFSETS:
        a, m = budget + offset, 3 * budget - 2 * (budget + offset)
        if not (0 < a <= 1 and 0 < m <= 1):
            continue
        x = (x_basis * top_mask(x_basis.abs() * scale, a)) @ back
        h = torch.nn.functional.silu(mlp.gate_proj(x)) * mlp.up_proj(x)
        out = mlp.down_proj(h * top_mask(h.abs(), m))
        error = ((out - dense).norm(dim=1) / dense.norm(dim=1)).mean().item()
        best = min(best, (error, a))
    return best


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", default="0,3,9,15,21,25,29")
    parser.add_argument("--budgets", default="0.5,0.35")
    parser.add_argument("--fit-tokens", type=int, default=4096)
    parser.add_argument("--test-tokens", type=int, default=1024)
    args = parser.parse_args()
    model, tokenizer = load("smollm2-135m")
    arch = architecture_of(model)
    layers = decoder_layers(model)
    text = load_text(CALIB_DEFAULT)
    half = len(text) // 2
    fit = capture_ffn_inputs(model, tokenizer, text[:half], tokens=args.fit_tokens, progress=False)
    test = capture_ffn_inputs(model, tokenizer, text[half:], tokens=args.test_tokens, progress=False)
    norms = [layer.post_attention_layernorm.weight.float() for layer in layers]
    # The residual stream's normalised direction z = x / γ, pooled over layers, gives the one global basis.
    pooled = torch.cat([(x / g)[:: len(layers)] for x, g in zip(fit, norms, strict=True)])
    q_global = axes(pooled)
    budgets = [float(v) for v in args.budgets.split(",")]
    print(
        "layer  budget  standard (a)     layer-pca free   layer-pca (a)    global-pca (a)   [paid: 0.125 of the FFN]"
    )
    sides = []
    for index in (int(v) for v in args.layers.split(",")):
        mlp, x, gamma = getattr(layers[index], arch.ffn), test[index], norms[index]
        dense = mlp(x)
        q_layer = axes(fit[index])
        folded = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]) * gamma  # [2F, D]: γ in the weight
        column = (folded @ q_global).norm(dim=0)  # [D]: the folded weight's column norms in the global basis
        ones = torch.ones(x.shape[1])
        z_global = (x / gamma) @ q_global
        for budget in budgets:
            standard = best_error(x, ones, torch.eye(x.shape[1]), mlp, dense, budget)
            free = best_error(x @ q_layer, ones, q_layer.T, mlp, dense, budget)
            layer_pca = best_error(x @ q_layer, ones, q_layer.T, mlp, dense, budget - 0.125)
            global_pca = best_error(z_global, column, q_global.T * gamma, mlp, dense, budget)
            cells = [f"{e:.3f} ({a:.2f})" for e, a in (standard, free, layer_pca, global_pca)]
            print(f"{index:5d}  {budget:6.2f}  " + "   ".join(f"{c:15s}" for c in cells))
        sides.append(where_teal_loses(mlp, x, q_layer, dense))
    print("\nat b = 0.5's split, one side sparse at a time (error), and the share of x's energy its top half keeps")
    for index, line in zip(args.layers.split(","), sides, strict=True):
        print(f"layer {index:>2}  {line}")


def where_teal_loses(mlp, x: torch.Tensor, q_layer: torch.Tensor, dense: torch.Tensor) -> str:
    """Output error with only x sparse (top 0.55, plain and in the layer's principal axes), only the intermediate
    sparse (top 0.4), and the energy share of x's top half in either basis."""

    def error(out: torch.Tensor) -> float:
        return ((out - dense).norm(dim=1) / dense.norm(dim=1)).mean().item()

    def ffn(inputs: torch.Tensor, keep_mid: float = 1.0) -> torch.Tensor:
        h = torch.nn.functional.silu(mlp.gate_proj(inputs)) * mlp.up_proj(inputs)
        return mlp.down_proj(h * top_mask(h.abs(), keep_mid))

    def energy(v: torch.Tensor) -> float:
        return ((v * top_mask(v.abs(), 0.5)).norm(dim=1) ** 2 / v.norm(dim=1) ** 2).mean().item()

    rotated = x @ q_layer
    only_x = error(ffn(x * top_mask(x.abs(), 0.55)))
    only_x_rotated = error(ffn((rotated * top_mask(rotated.abs(), 0.55)) @ q_layer.T))
    only_h = error(ffn(x, keep_mid=0.4))
    return (
        f"x only: {only_x:.3f} (rotated {only_x_rotated:.3f})   intermediate only: {only_h:.3f}   "
        f"energy kept: {energy(x):.3f} (rotated {energy(rotated):.3f})"
    )


if __name__ == "__main__":
    main()
