from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TealConfig:
    """TEAL (Liu et al., 2024, "Training-Free Activation Sparsity in Large Language Models"), uniform allocation:
    the same fraction of inputs is kept for gate/up (entries of x) and for down (entries of the intermediate)."""

    min_budget: float = 0.1
    """Lowest budget calibrated."""

    def __post_init__(self) -> None:
        if not 0.0 < self.min_budget < 1.0:
            raise ValueError(f"min_budget must be in (0, 1), got {self.min_budget}")
