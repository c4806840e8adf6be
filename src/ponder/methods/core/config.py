from __future__ import annotations

from dataclasses import dataclass

from ponder.methods.base import MethodConfig


@dataclass
class CoreConfig(MethodConfig):
    """CoreInfer (Wang et al., 2024, "CoreInfer: Accelerating LLM Inference with Semantics-Inspired Adaptive
    Sparse Activation"): the first `prefix_tokens` of a sequence run dense and vote for neurons; the sequence's core
    neurons are then fixed and every later token of that sequence runs only them."""

    prefix_tokens: int = 64
    """Tokens of a sequence (from its start) that run dense and choose its core neurons."""
    token_fraction: float = 0.4
    """Each prefix token votes for this fraction of neurons, its largest contributions |h_i|·‖down_i‖ (CoreInfer's
    token-wise core neurons); the sequence keeps the neurons with the most votes."""
    min_budget: float = 0.15
    """Lowest budget calibrated; the dense prefix alone costs prefix_tokens / 512 on 512-token calibration windows."""

    def __post_init__(self) -> None:
        if self.prefix_tokens < 1:
            raise ValueError(f"prefix_tokens must be positive, got {self.prefix_tokens}")
        if not 0.0 < self.token_fraction <= 1.0:
            raise ValueError(f"token_fraction must be in (0, 1], got {self.token_fraction}")
        if not 0.0 < self.min_budget < 1.0:
            raise ValueError(f"min_budget must be in (0, 1), got {self.min_budget}")
