"""Methods register themselves by name; shared code looks them up here and never names one."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ponder.errors import PonderError
from ponder.methods.base import MethodConfig, SparseFFN

CAPTURES = ("ffn", "residual")


@dataclass(frozen=True)
class Method:
    name: str
    config_class: type[MethodConfig]
    """A MethodConfig dataclass of the method's options (round-trips through JSON via dataclasses.asdict)."""
    layer_class: type[SparseFFN]
    """A SparseFFN subclass: layer_class(view=, activation=, config=), then the hooks `SparseFFN` documents."""
    captures: str = "ffn"
    """What each layer calibrates on (`ponder.train.capture`): "ffn", its FFN's inputs [N, D]; "residual", the
    residual stream at its input and at its output, two [N, D] tensors (depth methods)."""


METHODS: dict[str, Method] = {}


def register_method(
    name: str, *, config_class: type[MethodConfig], layer_class: type[SparseFFN], captures: str = "ffn"
) -> None:
    """Make a method available by `name`: the contract is `MethodConfig` and the hooks of `SparseFFN`."""
    if not (dataclasses.is_dataclass(config_class) and issubclass(config_class, MethodConfig)):
        raise PonderError(f"method '{name}': config_class must be a MethodConfig dataclass (ponder.methods.base)")
    if not issubclass(layer_class, SparseFFN):
        raise PonderError(f"method '{name}': layer_class must subclass SparseFFN (ponder.methods.base)")
    if captures not in CAPTURES:
        raise PonderError(f"method '{name}': captures '{captures}' is unknown: choose one of {', '.join(CAPTURES)}")
    METHODS[name] = Method(name, config_class, layer_class, captures)


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise PonderError(f"unknown method '{name}': choose one of {', '.join(sorted(METHODS))}")
    return METHODS[name]


def _parse_value(text: str, example: object) -> object:
    """`text` as the type of the field's default: bool, int, float, str, or a list of strings split at '/'."""
    if isinstance(example, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"'{text}' is not true or false")
        return text.lower() in ("true", "1")
    if isinstance(example, list):
        return [] if text in ("", "none") else text.split("/")
    return type(example)(text)


def make_config(name: str, options: dict[str, str] | None = None):
    """The method's config with `options` (field name → text, as on the command line) applied and validated."""
    config_class = get_method(name).config_class
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    values = {}
    for key, text in (options or {}).items():
        if key not in fields:
            raise PonderError(f"{name} has no option '{key}': choose from {', '.join(fields)}")
        field = fields[key]
        example = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        try:
            values[key] = _parse_value(text, example)
        except ValueError as e:
            raise PonderError(f"option {key}={text} of {name}: {e}") from None
    try:
        return config_class(**values)
    except ValueError as e:
        raise PonderError(f"bad options for {name}: {e}") from None


def parse_options(pairs: list[str]) -> dict[str, str]:
    """['key=value', ...] → {key: value}; a pair without '=' is an error that names it."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise PonderError(f"option '{pair}' is not KEY=VALUE (e.g. experts=32)")
        options[key.strip().replace("-", "_")] = value.strip()
    return options
