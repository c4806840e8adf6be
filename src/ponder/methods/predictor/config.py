from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PredictorConfig:
    """A low-rank predictor per layer (Liu et al., 2023, "Deja Vu"), trained in seconds on captured inputs to
    regress each neuron block's output norm; blocks whose predicted score clears a calibrated threshold run."""

    block_size: int = 1
    """Neurons per block; the executor reads whole blocks (contiguous rows). Blocks of 32 run 1.66x faster than
    dense at half the neurons against 1.41x for single neurons, but even an oracle choosing blocks of 16 loses
    2-4x more output accuracy than one choosing neurons (benchmarks/ffn_kernels.py; closing note of issue 3)."""
    rank: int = 64
    """Hidden width of the predictor (at most d_model / 8)."""
    steps: int = 400
    """Adam steps per layer."""
    lr: float = 3e-3
    seed: int = 0
    min_budget: float = 0.15
    """Lowest budget calibrated (must exceed the predictor's own cost, about 0.03-0.05)."""

    def __post_init__(self) -> None:
        if self.block_size < 1 or self.rank < 1 or self.steps < 1:
            raise ValueError("block_size, rank and steps must be positive")
        if not 0.0 < self.min_budget < 1.0:
            raise ValueError(f"min_budget must be in (0, 1), got {self.min_budget}")
