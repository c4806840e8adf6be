"""The KV budget: how many cached tokens each layer keeps, which ones (the policy) and at what precision (bits)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ponder.errors import PonderError

POLICIES = ("window", "h2o", "snapkv", "d2o")
"""Eviction policies: recent window + sinks (StreamingLLM), heavy hitters (H2O), observation-window prompt
compression (SnapKV), dynamic per-layer budgets with merging (D2O)."""
BITS = (16, 8, 4)


def parse_kv_budget(text: str) -> float | int:
    """`0.5` is a fraction of the tokens seen, `512` a token count (`1` means all: a one-token cache is no use);
    both checked by `check_kv_budget`."""
    try:
        value: float | int = int(text) if text.strip().lstrip("+-").isdigit() else float(text)
        value = 1.0 if value == 1 else value
    except ValueError:
        raise PonderError(f"KV budget '{text}' is not a number: give a fraction in (0, 1] or a token count") from None
    return check_kv_budget(value)


def check_kv_budget(budget: float | int, context: int | None = None) -> float | int:
    """A fraction in (0, 1] or a positive token count no larger than `context` (when known)."""
    if isinstance(budget, bool) or not isinstance(budget, (int, float)):
        raise PonderError(f"KV budget must be a number, got {budget!r}")
    if budget <= 0:
        raise PonderError(f"KV budget must be positive, got {budget}: give a fraction in (0, 1] or a token count")
    if isinstance(budget, float) and budget > 1:
        raise PonderError(f"KV budget {budget} is above 1: a fraction keeps at most all tokens; give (0, 1]")
    if isinstance(budget, int) and context is not None and budget > context:
        raise PonderError(f"KV budget of {budget} tokens is above the context of {context}: give at most {context}")
    return float(budget) if isinstance(budget, float) else budget


def check_kv_policy(name: str) -> str:
    if name not in POLICIES:
        raise PonderError(f"unknown KV policy '{name}': choose one of {', '.join(POLICIES)}")
    return name


@dataclass(frozen=True)
class KVConfig:
    budget: float | int = 1.0
    """Fraction of the tokens seen that each layer keeps (float in (0, 1]), or a token count (int)."""
    policy: str = "window"
    """Which tokens stay when the budget is exceeded: one of `POLICIES`."""
    bits: int = 16
    """16 keeps the model's precision; 8 or 4 quantize keys per channel and values per token (KIVI)."""
    sinks: int = 4
    """First tokens never evicted: attention sinks (StreamingLLM, Xiao et al. 2023)."""
    recent: float = 0.5
    """Share of the budget reserved for the most recent tokens by h2o and d2o (H2O's half heavy, half recent)."""
    window: int = 32
    """SnapKV's observation window: the last prompt queries whose attention scores the prompt (Li et al. 2024)."""
    pool: int = 7
    """SnapKV's pooling kernel over positions, so kept tokens keep their neighbours."""
    merge_threshold: float = 0.5
    """D2O: an evicted entry merges into its most similar kept one when their keys' cosine similarity reaches
    this; below it, the entry is dropped."""
    residual: int = 32
    """KIVI: the most recent tokens stay in full precision."""
    group: int = 32
    """KIVI: tokens per key-quantization group (keys are quantized per channel over a group of tokens)."""

    def __post_init__(self) -> None:
        check_kv_budget(self.budget)
        check_kv_policy(self.policy)
        if self.bits not in BITS:
            raise PonderError(f"kv_bits must be one of {', '.join(map(str, BITS))}, got {self.bits}")
        if not 0.0 <= self.recent <= 1.0:
            raise PonderError(f"recent share must be in [0, 1], got {self.recent}")
        if self.pool % 2 == 0:
            raise PonderError(f"pool must be odd (a centred kernel), got {self.pool}")
        for name in ("window", "pool", "residual", "group"):
            if getattr(self, name) < 1:
                raise PonderError(f"{name} must be at least 1, got {getattr(self, name)}")

    @property
    def compresses(self) -> bool:
        """Whether this cache differs from the full one at all."""
        return self.budget != 1.0 or self.bits != 16

    def tokens(self, seen: int) -> int:
        """The most entries a layer may hold after `seen` tokens (before a per-layer share)."""
        if isinstance(self.budget, float):
            return max(1, min(seen, int(self.budget * seen)))
        return min(seen, self.budget)

    def as_dict(self) -> dict:
        return asdict(self)
