"""Methods register themselves by name; shared code looks them up here and never names one."""

from __future__ import annotations

from dataclasses import dataclass

from ponder.errors import PonderError


@dataclass(frozen=True)
class Method:
    name: str
    config_class: type
    """A dataclass of the method's options (round-trips through JSON via dataclasses.asdict)."""
    layer_class: type
    """A SparseFFN subclass: layer_class(view=, activation=, config=), then .calibrate(inputs [N, D])."""


METHODS: dict[str, Method] = {}


def register_method(name: str, *, config_class: type, layer_class: type) -> None:
    METHODS[name] = Method(name, config_class, layer_class)


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise PonderError(f"unknown method '{name}': choose one of {', '.join(sorted(METHODS))}")
    return METHODS[name]
