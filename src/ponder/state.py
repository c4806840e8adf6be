"""What a converted model carries besides its modules: method, options, budget, policy, calibration record.

Conversion and loading set it on the model (`set_adaptive_state`); everything else reads it through
`adaptive_state`, never by attribute. `to_json` is the config a save writes (`ponder_config.json`, less the
base model reference and format number that `save_adaptive` adds).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

_ATTRIBUTE = "ponder_state"
CONFIG_FILE = "ponder_config.json"
"""The file of a converted directory that holds its state (`to_json`, plus the base model and format)."""


@dataclass
class AdaptiveState:
    """The adaptive side of a converted model."""

    method: str
    """The registered method name."""
    config: dict
    """The method's options, as `dataclasses.asdict` of its config (what is saved)."""
    budget: float = 1.0
    """The fraction of dense FFN compute every adaptive module is set to."""
    policy: str | None = None
    """The routing policy set at run time (routed methods), or None: the one the options chose."""
    calibration: dict | None = None
    """How it was calibrated: {"data", "tokens", "allocation"} (None for models saved before this was recorded)."""

    def to_json(self) -> dict:
        """The saved form: the same keys as always, optional ones only where set."""
        saved = {"method": self.method, "config": self.config}
        if self.calibration is not None:
            saved["calibration"] = self.calibration
        saved["budget"] = self.budget
        if self.policy is not None:
            saved["policy"] = self.policy
        return saved


def adaptive_state(model: nn.Module) -> AdaptiveState | None:
    """The model's adaptive state, or None for a model that was never converted."""
    state = model.__dict__.get(_ATTRIBUTE)
    return state if isinstance(state, AdaptiveState) else None


def set_adaptive_state(model: nn.Module, state: AdaptiveState) -> None:
    model.__dict__[_ATTRIBUTE] = state


def method_name(model: nn.Module) -> str:
    """The model's method name, "dense" for a model that was never converted."""
    state = adaptive_state(model)
    return "dense" if state is None else state.method
