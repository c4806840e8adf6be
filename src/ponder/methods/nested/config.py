from __future__ import annotations

from dataclasses import dataclass


@dataclass
class NestedConfig:
    """The FFN's neurons sorted by calibrated importance and cut into `learners` equal blocks; the output with k
    learners is the sum of the first k blocks (k = 0 skips the FFN, k = learners is the dense FFN). A per-layer
    gate predicts, from the FFN input, the output error of every k; a token runs the smallest k whose predicted
    error is below the layer's threshold, which `set_budget` sets from a calibrated grid."""

    learners: int = 16
    """Blocks per FFN (96 neurons each for SmolLM2-135M). Any k reads one contiguous prefix of the weights, so
    finer blocks cost no speed; they give the gate finer steps."""
    rank: int = 64
    """Hidden width of the gate (at most d_model / 8)."""
    steps: int = 600
    """Adam steps per layer for the gate."""
    lr: float = 3e-3
    seed: int = 0
    min_budget: float = 0.1
    """Lowest budget calibrated (must exceed the gate's own cost, about 0.015 for SmolLM2-135M)."""

    def __post_init__(self) -> None:
        if self.learners < 2 or self.rank < 1 or self.steps < 1:
            raise ValueError("learners must be at least 2; rank and steps must be positive")
        if not 0.0 < self.min_budget < 1.0:
            raise ValueError(f"min_budget must be in (0, 1), got {self.min_budget}")
