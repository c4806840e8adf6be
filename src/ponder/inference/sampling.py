"""Choosing the next token from logits: greedy, or temperature and nucleus (top-p) sampling with a seed.

One helper for every decoder that returns logits (the lean decoder's runner, the quantized runtime), so a request
samples the same way whichever backend serves it. Sampling follows the usual definitions: logits are divided by the
temperature, softmaxed, and the smallest set of most-likely tokens whose probabilities reach `top_p` is kept
(Holtzman et al. 2019, "The Curious Case of Neural Text Degeneration", section 3.1); temperature 0 is greedy.

Shapes: V = vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ponder.errors import PonderError


@dataclass(frozen=True)
class Sampling:
    """How one sequence picks its tokens."""

    temperature: float = 1.0
    """Divides the logits; 0 picks the most likely token (greedy, the seed unused)."""
    top_p: float = 1.0
    """Nucleus mass in (0, 1]: only the most likely tokens whose probabilities sum to it are drawn from."""
    seed: int | None = None
    """Seeds the sequence's own generator, so one request's tokens repeat whatever else the process draws."""

    def __post_init__(self) -> None:
        if not self.temperature >= 0:  # also refuses NaN
            raise PonderError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise PonderError(f"top_p must lie in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def generator(self) -> torch.Generator | None:
        """A fresh generator for one sequence (None when greedy); unseeded ones draw a seed from torch's."""
        if self.greedy:
            return None
        generator = torch.Generator()
        generator.manual_seed(self.seed if self.seed is not None else int(torch.randint(2**62, ()).item()))
        return generator


def token_probabilities(logits: torch.Tensor, sampling: Sampling) -> torch.Tensor:
    """The distribution [V] that `sample_token` draws from (not for greedy): temperature, then the nucleus,
    renormalized."""
    logits = logits.reshape(-1).float()  # [V]; fp32 so a bf16 model's softmax keeps its small probabilities
    probs = torch.softmax(logits / sampling.temperature, dim=-1)  # [V]
    if sampling.top_p < 1:
        sorted_probs, order = probs.sort(descending=True)  # [V], [V]
        before = sorted_probs.cumsum(0) - sorted_probs  # [V]: mass of the more likely tokens
        sorted_probs[before >= sampling.top_p] = 0  # the first token is always kept (before = 0)
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)  # [V]
        probs /= probs.sum()  # normalized: speculative acceptance compares a token's probability with a uniform draw
    return probs


def sample_token(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None) -> int:
    """The next token from the last position's logits [V] (or [1, V])."""
    if sampling.greedy:
        return int(logits.reshape(-1).argmax())
    return int(torch.multinomial(token_probabilities(logits, sampling), 1, generator=generator))
