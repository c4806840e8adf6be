from __future__ import annotations

from dataclasses import dataclass, field

from ponder.methods.base import MethodConfig
from ponder.methods.moe.experts import CLUSTERINGS
from ponder.methods.moe.routing import POLICIES

PSEUDO_EXPERTS = ("zero", "copy", "constant")
TUNE_PRECISIONS = ("float32", "bfloat16")


@dataclass
class MoEConfig(MethodConfig):
    """Dense → dynamic MoE: the FFN's neurons cut into `experts` equal blocks (a permutation, so every expert on is
    the dense FFN), `shared_experts` of them always on; a per-layer router predicts every routed expert's output
    norm (D2DMoE) and a routing policy picks, per token, the experts that run under the budget."""

    experts: int = 64
    """Experts per FFN, shared ones included (24 neurons each for SmolLM2-135M). More, smaller experts route
    closer to single neurons (better quality, measured); fewer, larger blocks read memory faster."""
    shared_experts: int = 8
    """Experts always run (CMoE's shared experts): the neurons with the largest mean contribution."""
    clustering: str = "activations"
    """How routed experts are formed: 'activations' (neurons contributing to the same tokens, MoEfication's
    co-activation) or 'weights' (similar gate/up weight rows)."""
    policy: str = "threshold"
    """Routing policy at run time (switchable on a loaded model): top-k, top-p, dynamic-k or threshold."""
    pseudo_experts: list[str] = field(default_factory=lambda: ["zero", "constant"])
    """Zero-computation experts (after MoE++) that stand in for the routed experts a token skips; the router picks
    one per token. 'zero': nothing; 'constant': each skipped expert's mean output when skipped; 'copy': each
    skipped expert's output predicted as a per-channel scale of the input. Empty: skipped experts give nothing."""
    rank: int = 128
    """Hidden width of the router (at most d_model / 8)."""
    steps: int = 800
    """Adam steps per layer for the router."""
    lr: float = 3e-3
    seed: int = 0
    fit_budget: float = 0.5
    """Budget at which the pseudo experts are fitted (what a token skips depends on the budget)."""
    min_budget: float = 0.2
    """Lowest budget calibrated; must exceed the shared experts' and the router's cost."""
    tune_steps: int = 0
    """Steps of the end-to-end phase after calibration (`ponder.train.tune.tune_experts`): the experts' weights and
    pseudo-expert rows train against the dense model's output (KL) under the router's decisions, at a budget
    drawn per step, 1,024 calibration tokens a step. Budget 1 keeps the original weights (exact); the tuned copies
    are saved with the model (the size of the FFN weights again). 0: off."""
    tune_lr: float = 3e-4
    """Adam's learning rate in the end-to-end phase."""
    tune_decay: float = 0.0
    """Share of the steps, at the end, over which the learning rate falls linearly to 0 (0: constant)."""
    tune_min_budget: float = 0.3
    """Lowest budget the end-to-end phase draws (lower ones break the model and dominate the gradient)."""
    tune_max_budget: float = 0.95
    """Highest budget it draws. The tuned copies are shared by every budget below 1, so a narrow range around the
    budget a user will run trains for that one at the others' expense."""
    tune_router_lr: float = 0.0
    """Adam's learning rate for the routers in the end-to-end phase; 0 keeps them as fitted (on the untuned
    experts' output norms). Above 0 they train with the experts, on the same KL: the threshold policy's hard
    choices forward, their sigmoid relaxation backward (straight-through), so the loss reaches the score of every
    expert, run or skipped; a budget loss holds each layer's share of experts where its knob put it, and every
    policy's knobs are calibrated again afterwards. Needs policy 'threshold' (the only one with a relaxation)."""
    tune_precision: str = "float32"
    """Arithmetic of the end-to-end phase's forward passes: 'float32', or 'bfloat16' (autocast; the trained
    tensors and Adam stay float32). On a CPU with AVX512-BF16 a SmolLM2-135M step ran 1.57× faster than float32,
    its gradient 23 % from float32's where two batches' gradients differ by 142 %, and the tuned model's
    perplexity moved within run-to-run spread (BENCHMARKS.md). On CPUs without it, it is slower."""

    def __post_init__(self) -> None:
        if self.experts < 2 or not 0 <= self.shared_experts < self.experts:
            raise ValueError("experts must be at least 2 and shared_experts in [0, experts)")
        if self.clustering not in CLUSTERINGS:
            raise ValueError(f"clustering must be one of {', '.join(CLUSTERINGS)}, got '{self.clustering}'")
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got '{self.policy}'")
        unknown = set(self.pseudo_experts) - set(PSEUDO_EXPERTS)
        if unknown:
            raise ValueError(f"pseudo experts must be among {', '.join(PSEUDO_EXPERTS)}, got {sorted(unknown)}")
        if self.rank < 1 or self.steps < 1:
            raise ValueError("rank and steps must be positive")
        if self.tune_steps < 0 or self.tune_lr <= 0 or not 0.0 <= self.tune_decay <= 1.0:
            raise ValueError("tune_steps must be >= 0, tune_lr positive and tune_decay in [0, 1]")
        if self.tune_router_lr < 0 or (self.tune_router_lr and self.policy != "threshold"):
            raise ValueError("tune_router_lr must be >= 0, and routers train under policy 'threshold' only")
        if self.tune_precision not in TUNE_PRECISIONS:
            choices = ", ".join(TUNE_PRECISIONS)
            raise ValueError(f"tune_precision must be one of {choices}, got '{self.tune_precision}'")
        if not self.min_budget <= self.tune_min_budget <= self.tune_max_budget < 1.0:
            raise ValueError(
                "need min_budget <= tune_min_budget <= tune_max_budget < 1, "
                f"got {self.tune_min_budget} and {self.tune_max_budget}"
            )
        if not 0.0 < self.min_budget <= self.fit_budget < 1.0:
            raise ValueError(f"need 0 < min_budget <= fit_budget < 1, got {self.min_budget} and {self.fit_budget}")
