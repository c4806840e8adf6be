from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ponder.methods.calibrate import GateConfig
from ponder.methods.nested.budget_gate import GATES

ROUTERS = ("error", "budget")


@dataclass
class NestedConfig(GateConfig):
    """The FFN's neurons sorted by calibrated importance and cut into `learners` equal blocks; the output with k
    learners is the sum of the first k blocks (k = 0 skips the FFN, k = learners is the dense FFN). A per-layer
    gate chooses k per token from the FFN input and the budget (`router`)."""

    SAVED_BEFORE: ClassVar[dict] = {"router": "error", "budget_gate": "film"}  # what models saved before each had

    learners: int = 16
    """Blocks per FFN (96 neurons each for SmolLM2-135M). Any k reads one contiguous prefix of the weights, so
    finer blocks cost no speed; they give the gate finer steps."""
    router: str = "budget"
    """"budget": the gate takes the budget as an input and outputs which learners a token needs at that budget
    (`methods.nested.budget_gate`); a controller calibrated in closed loop makes its mean compute meet the budget.
    "error": the gate predicts every prefix's output error and the budget sets a threshold on it (the first nested
    models; on SmolLM2 far worse below b = 0.9, BENCHMARKS.md)."""
    budget_gate: str = "monotone"
    """The gate of router=budget. "monotone": each learner's logit rises with the budget, so no token runs fewer
    learners at a higher budget. "film": the budget scales and shifts the gate's hidden units (models converted
    before the monotone gate), which nothing keeps monotone."""
    tune_steps: int = 0
    """Steps of the end-to-end phase after calibration (router=budget only; `ponder.train.tune`): the gates are
    trained against the dense model's output (KL) plus a budget loss, 1,024 calibration tokens a step."""
    tune_min_budget: float = 0.3
    """Lowest budget the end-to-end phase draws. Lower budgets break the model (KL of 6-12 nats a token on SmolLM2
    at b ≤ 0.2) and their gradients then dominate a gate shared by all budgets (BENCHMARKS.md)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.learners < 2:
            raise ValueError("learners must be at least 2")
        if self.router not in ROUTERS:
            raise ValueError(f"router must be one of {', '.join(ROUTERS)}, got '{self.router}'")
        if self.budget_gate not in GATES:
            raise ValueError(f"budget_gate must be one of {', '.join(GATES)}, got '{self.budget_gate}'")
        if self.tune_steps < 0 or (self.tune_steps and self.router != "budget"):
            raise ValueError("tune_steps must be 0, or positive with router=budget (the gate it trains)")
        if not self.min_budget <= self.tune_min_budget < 1.0:
            raise ValueError(f"tune_min_budget must be in [min_budget, 1), got {self.tune_min_budget}")
