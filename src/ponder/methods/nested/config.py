from __future__ import annotations

from dataclasses import dataclass

from ponder.methods.calibrate import GateConfig


@dataclass
class NestedConfig(GateConfig):
    """The FFN's neurons sorted by calibrated importance and cut into `learners` equal blocks; the output with k
    learners is the sum of the first k blocks (k = 0 skips the FFN, k = learners is the dense FFN). A per-layer
    gate predicts, from the FFN input, the output error of every k; a token runs the smallest k whose predicted
    error is below the layer's threshold, which `set_budget` sets from a calibrated grid."""

    learners: int = 16
    """Blocks per FFN (96 neurons each for SmolLM2-135M). Any k reads one contiguous prefix of the weights, so
    finer blocks cost no speed; they give the gate finer steps."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.learners < 2:
            raise ValueError("learners must be at least 2")
