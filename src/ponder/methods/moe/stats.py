"""What a routed module's policy did while collecting (`ponder inspect`, through `routing_stats`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch


@dataclass
class RoutingStats:
    """What a routed module's policy did while its `stats` attribute held one of these (`ponder inspect`)."""

    tokens: int = 0
    experts_run: int = 0
    """Routed experts run, summed over tokens."""
    histogram: list[int] = field(default_factory=list)
    """Tokens that ran 0, 1, ..., E routed experts."""
    load: list[int] = field(default_factory=list)
    """Tokens routed to each expert."""
    pseudo: dict[str, int] = field(default_factory=dict)
    """Tokens whose skipped experts each pseudo expert stood in for."""

    def add(self, chosen: torch.Tensor, option: torch.Tensor, names: list[str]) -> None:
        """chosen: [N, E] bool; option: [N] index into `names`."""
        E = chosen.shape[1]
        if not self.load:
            self.load, self.histogram = [0] * E, [0] * (E + 1)
        per_token = chosen.sum(1)  # [N]
        self.tokens += chosen.shape[0]
        self.experts_run += int(per_token.sum())
        self.load = [a + int(b) for a, b in zip(self.load, chosen.sum(0), strict=True)]
        counts = torch.bincount(per_token, minlength=E + 1)
        self.histogram = [a + int(b) for a, b in zip(self.histogram, counts, strict=True)]
        for index, name in enumerate(names):
            self.pseudo[name] = self.pseudo.get(name, 0) + int((option == index).sum())

    def summary(self) -> dict:
        """Means and shares for a report: experts per token, each expert's share of tokens, pseudo shares."""
        tokens = max(self.tokens, 1)
        return asdict(self) | {
            "experts_per_token": self.experts_run / tokens,
            "load_share": [n / tokens for n in self.load],
            "pseudo_share": {name: n / tokens for name, n in self.pseudo.items()},
        }
