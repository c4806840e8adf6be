"""How good can converted experts be? Perplexity when experts are chosen by their *true* output norms (an oracle
that computes every expert to choose), against the dense model and teal, for several expert layouts.

Each FFN is cut with ponder's own expert construction (`ponder.methods.moe.experts.expert_order`, calibrated on
wikitext2-valid). The oracle keeps, per layer and forward pass, the (token, expert) pairs with the largest output
norms until half of the routed experts run on average (the `threshold` policy's allocation, with perfect scores);
"constant" adds each skipped expert's mean output when skipped (the `constant` pseudo expert, fitted on
calibration text under the same oracle). Shared experts run always and count toward the half.

    python benchmarks/experiments/moe_oracle.py [--windows 5] [--keep 0.5]
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from ponder.data import CALIB_DEFAULT, EVAL_DEFAULT, load_text
from ponder.eval import perplexity
from ponder.methods.moe.experts import expert_order
from ponder.models import DEFAULT_MODEL, load
from ponder.models.ffn import ffn_views
from ponder.models.targets import architecture_of, decoder_layers
from ponder.train.capture import capture_ffn_inputs


class OracleExperts(nn.Module):
    """An FFN whose routed experts are picked by their true output norms (computing all of them)."""

    def __init__(self, view, calibration: torch.Tensor, *, experts: int, shared: int, keep: float, constant: bool):
        super().__init__()
        self.view, self.keep, self.constant = view, keep, constant
        h = view.intermediate(calibration)  # [N, F]
        weights = torch.cat([view.gate, view.up], dim=1)
        order = expert_order(h, view.down, weights, experts=experts, shared=shared)
        size = view.d_ff // experts
        self.shared = order[: shared * size]
        self.routed = order[shared * size :].view(experts - shared, size)  # [E, S]
        # Of the routed experts, the share that keeps `keep` of all neurons with the shared ones always on.
        self.routed_keep = (keep * experts - shared) / (experts - shared)
        self.means = torch.zeros(len(self.routed), view.d_model)
        if constant:
            outputs = self.expert_outputs(calibration)  # [N, E, D]
            skipped = ~self.select(outputs.norm(dim=-1))
            self.means = (outputs * skipped[..., None]).sum(0) / skipped.sum(0).clamp_min(1)[:, None]

    def expert_outputs(self, x: torch.Tensor) -> torch.Tensor:
        h = self.view.intermediate(x)[:, self.routed]  # [N, E, S]
        return torch.einsum("nes,esd->ned", h, self.view.down.T[self.routed])

    def select(self, norms: torch.Tensor) -> torch.Tensor:
        keep = int(norms.numel() * self.routed_keep)
        cut = norms.flatten().kthvalue(norms.numel() - keep).values
        return norms > cut  # [N, E]

    # ponder.stats.ReportsCompute: the oracle's own compute is not what is being measured here.
    def dense_macs(self) -> int:
        return self.view.macs_per_token()

    def element_size(self) -> int:
        return 4

    def pop_compute(self) -> tuple[int, int]:
        return 0, 0

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        x = hidden_states.reshape(-1, hidden_states.shape[-1])
        outputs = self.expert_outputs(x)  # [N, E, D]
        chosen = self.select(outputs.norm(dim=-1))
        y = (outputs * chosen[..., None]).sum(1) + (~chosen).float() @ self.means
        shared = self.view.intermediate(x)[:, self.shared] @ self.view.down.T[self.shared]
        return (y + shared).view(hidden_states.shape)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--keep", type=float, default=0.5, help="share of FFN neurons run")
    args = parser.parse_args()
    model, tokenizer = load(DEFAULT_MODEL)
    calibration = capture_ffn_inputs(model, tokenizer, load_text(CALIB_DEFAULT), tokens=4096, progress=False)
    text = load_text(EVAL_DEFAULT)
    arch = architecture_of(model)
    originals = [getattr(layer, arch.ffn) for layer in decoder_layers(model)]
    views = ffn_views(model)
    dense = perplexity(model, tokenizer, text, windows=args.windows, progress=False).perplexity
    print(f"windows={args.windows} keep={args.keep}  dense perplexity {dense:.2f}")
    print(f"{'experts':>7s} {'shared':>6s} {'constant':>8s} {'oracle perplexity':>17s}")
    with torch.inference_mode(False), torch.no_grad():
        for experts, shared, constant in [(32, 0, False), (64, 0, False), (64, 0, True), (64, 8, False),
                                          (64, 8, True), (128, 0, False), (128, 0, True)]:  # fmt: skip
            for layer, view, x in zip(decoder_layers(model), views, calibration, strict=True):
                oracle = OracleExperts(view, x, experts=experts, shared=shared, keep=args.keep, constant=constant)
                setattr(layer, arch.ffn, oracle)
            result = perplexity(model, tokenizer, text, windows=args.windows, progress=False).perplexity
            print(f"{experts:7d} {shared:6d} {str(constant):>8s} {result:17.2f}", flush=True)
    for layer, original in zip(decoder_layers(model), originals, strict=True):
        setattr(layer, arch.ffn, original)


if __name__ == "__main__":
    main()
