"""Hold the FFN compute a model spends at its budget on any text: a closed-loop controller over the budget knob.

Thresholds are calibrated on one text; on another (a chat answer the model writes, a user's documents) the same
thresholds keep a different share of neurons: a moe model at budget 0.5 spent 0.583 on generated text. The
controller reads what the modules counted since its last update and moves the knob it sets on them by `gain` times
the gap between the target and the spend over a window of recent tokens (integral control), clamped to the
calibrated range. It acts between forward passes only (every `every` decoded tokens, or once per scored window), so
the tokens inside one pass share one knob setting and budget 1 stays exact: a target of 1 is left alone.
"""

from __future__ import annotations

from collections import deque

from transformers import PreTrainedModel

from ponder.adaptive import adaptive_modules
from ponder.errors import PonderError
from ponder.methods.base import FULL_BUDGET, check_calibrated


class BudgetController:
    """Keeps `model`'s spent FFN compute (the fraction of dense MACs its modules count) near `target`.

    Call `update()` after each forward pass; `spent` is the fraction over all tokens seen since the start, `recent`
    over the last `window` tokens. The model's own budget (its saved state) is not changed: only the knob that each
    module's thresholds are interpolated at.
    """

    def __init__(self, model: PreTrainedModel, target: float, *, gain: float = 0.5, every: int = 8, window: int = 64):
        self.modules = adaptive_modules(model)
        if not self.modules:
            raise PonderError("holding a budget needs an adaptive model: convert it first with `ponder convert`")
        if gain <= 0 or every < 1 or window < 1:
            raise PonderError(f"gain must be > 0, every and window >= 1; got {gain}, {every}, {window}")
        self.low = max(module.min_budget for module in self.modules)
        self.target = check_calibrated(target, self.low, self.modules[0].method)
        self.gain, self.every, self.window = gain, every, window
        self.setting = self.target
        self._marks = [self._counted(m) for m in self.modules]
        self._recent: deque[tuple[int, float, float]] = deque()  # (tokens, macs, dense macs) per update
        self._pending = 0
        self.total_macs = self.total_dense = 0.0
        self._apply()

    @staticmethod
    def _counted(module) -> tuple[int, int]:
        return module.tally.seen_tokens, module.tally.seen_macs

    def _apply(self) -> None:
        for module in self.modules:
            module.set_budget(self.setting)

    def update(self) -> None:
        """Take in what ran since the last call; every `every` tokens, move the knob toward the target."""
        tokens = macs = dense = 0
        for i, module in enumerate(self.modules):
            seen = self._counted(module)
            step_tokens, step_macs = seen[0] - self._marks[i][0], seen[1] - self._marks[i][1]
            self._marks[i] = seen
            macs += step_macs
            dense += step_tokens * module.dense_macs()
            tokens = max(tokens, step_tokens)
        if tokens == 0:
            return
        self.total_macs += macs
        self.total_dense += dense
        self._recent.append((tokens, macs, dense))
        while sum(t for t, _, _ in self._recent) - self._recent[0][0] >= self.window:
            self._recent.popleft()
        self._pending += tokens
        if self.target >= FULL_BUDGET or self._pending < self.every:
            return
        self._pending = 0
        self.setting = min(FULL_BUDGET, max(self.low, self.setting + self.gain * (self.target - self.recent)))
        self._apply()

    @property
    def recent(self) -> float:
        """Spent fraction of dense FFN MACs over the last `window` tokens."""
        dense = sum(d for _, _, d in self._recent)
        return sum(m for _, m, _ in self._recent) / dense if dense else self.target

    @property
    def spent(self) -> float:
        """Spent fraction of dense FFN MACs over everything since the controller started."""
        return self.total_macs / self.total_dense if self.total_dense else self.target
