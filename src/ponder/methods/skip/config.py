from __future__ import annotations

from dataclasses import dataclass

from ponder.methods.calibrate import GateConfig

STAND_INS = ("affine", "constant", "none")


@dataclass
class SkipConfig(GateConfig):
    """Per token and layer, the whole decoder layer (attention and FFN) runs or is skipped. A per-layer gate
    predicts, from the layer's input, the log of the layer's relative update ‖Δx‖ / ‖x‖; one threshold shared by
    all layers (so layers whose updates matter are skipped less) is calibrated for a grid of budgets. A skipped
    token still writes the layer's K/V, computed from its residual as the layer would, so later tokens attend to
    it as usual and decoding stays causal."""

    stand_in: str = "affine"
    """What a skipped token adds instead of the layer's update: "affine" (a per-channel scale of its residual plus
    a shift, 2·D numbers per layer, fitted on calibration tokens), "constant" (the mean update) or "none"."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.stand_in not in STAND_INS:
            raise ValueError(f"stand_in must be one of {', '.join(STAND_INS)}, got '{self.stand_in}'")
