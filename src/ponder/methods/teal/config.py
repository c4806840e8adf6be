from __future__ import annotations

from dataclasses import dataclass

from ponder.methods.base import MethodConfig


@dataclass
class TealConfig(MethodConfig):
    """TEAL (Liu et al., 2024, "Training-Free Activation Sparsity in Large Language Models"): magnitude thresholds
    on the inputs of gate/up (entries of x) and of down (entries of the intermediate)."""

    min_budget: float = 0.1
    """Lowest budget calibrated."""
    split: str = "search"
    """How a layer's budget is shared between the two thresholds: "uniform" keeps the same fraction of both,
    "search" tries a few splits per budget and keeps the one with the smallest output error on calibration text
    (TEAL's greedy allocation across projections, within one FFN)."""

    score: str = "magnitude"
    """What a threshold compares: "magnitude" is TEAL's |x|; "wina" is WINA's |x| times the norm of the weight
    column the entry multiplies (Chen et al., 2025, "WINA: Weight Informed Neuron Activation"), for the inputs of
    gate/up and, in GLU FFNs, of down. The kernels run it by scaling x and dividing the weights (same FFN)."""

    def __post_init__(self) -> None:
        if self.score not in ("magnitude", "wina"):
            raise ValueError(f'score must be "magnitude" or "wina", got {self.score!r}')
        if not 0.0 < self.min_budget < 1.0:
            raise ValueError(f"min_budget must be in (0, 1), got {self.min_budget}")
        if self.split not in ("search", "uniform"):
            raise ValueError(f'split must be "search" or "uniform", got {self.split!r}')
