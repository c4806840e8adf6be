from __future__ import annotations

from dataclasses import dataclass

from ponder.methods.calibrate import GateConfig


@dataclass
class PredictorConfig(GateConfig):
    """A low-rank predictor per layer (Liu et al., 2023, "Deja Vu"), trained in seconds on captured inputs to
    regress each neuron block's output norm; blocks whose predicted score clears a calibrated threshold run."""

    block_size: int = 1
    """Neurons per block; the executor reads whole blocks (contiguous rows). Blocks of 32 run 1.66x faster than
    dense at half the neurons against 1.41x for single neurons, but even an oracle choosing blocks of 16 loses
    2-4x more output accuracy than one choosing neurons (benchmarks/experiments/ffn_kernels.py)."""
    steps: int = 400
    min_budget: float = 0.15
    """Lowest budget calibrated (must exceed the predictor's own cost, about 0.03-0.05)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.block_size < 1:
            raise ValueError("block_size must be positive")
