from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SkipConfig:
    """Per token and layer, the whole decoder layer (attention and FFN) runs or is skipped. A per-layer gate
    predicts, from the layer's input, the log of the layer's relative update ‖Δx‖ / ‖x‖; one threshold shared by
    all layers (so layers whose updates matter are skipped less) is calibrated for a grid of budgets. A skipped
    token still writes the layer's K/V, computed from its residual as the layer would, so later tokens attend to
    it as usual and decoding stays causal."""

    stand_in: str = "affine"
    """What a skipped token adds instead of the layer's update: "affine" (a per-channel scale of its residual plus
    a shift, 2·D numbers per layer, fitted on calibration tokens), "constant" (the mean update) or "none"."""
    rank: int = 64
    """Hidden width of the gate (at most d_model / 8)."""
    steps: int = 600
    """Adam steps per layer for the gate."""
    lr: float = 3e-3
    seed: int = 0
    min_budget: float = 0.1
    """Lowest budget calibrated (must exceed the gate's own cost, about 0.014 of the FFN for SmolLM2-135M)."""

    def __post_init__(self) -> None:
        if self.stand_in not in ("affine", "constant", "none"):
            raise ValueError(f"stand_in must be affine, constant or none, got '{self.stand_in}'")
        if self.rank < 1 or self.steps < 1:
            raise ValueError("rank and steps must be positive")
        if not 0.0 < self.min_budget < 1.0:
            raise ValueError(f"min_budget must be in (0, 1), got {self.min_budget}")
