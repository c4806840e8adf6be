from __future__ import annotations

from dataclasses import dataclass

from ponder.methods.base import MethodConfig


@dataclass
class CatsConfig(MethodConfig):
    """CATS (Lee et al., 2024, "CATS: Contextually-Aware Thresholding for Sparsity in LLMs")."""

    min_budget: float = 0.4
    """Lowest budget calibrated. The gate projection always runs (1/3 of a GLU FFN), so budgets need > 1/3."""

    def __post_init__(self) -> None:
        if not 0.0 < self.min_budget < 1.0:
            raise ValueError(f"min_budget must be in (0, 1), got {self.min_budget}")
