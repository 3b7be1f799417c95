"""The one set of checks every config section uses: a TOML table whose keys are the dataclass's fields,
typed values, enums by value, ranges. Each failure names the field and the value, PEFT style:
"`lora.r` must be > 0, got 0."
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import fields
from typing import Any, TypeVar

from common.errors import ConfigError

E = TypeVar("E", bound=enum.StrEnum)


def require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def is_int(value: Any) -> bool:
    """An integer, not a bool: TOML's `true` must not pass as 1."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A real number (int or float), not a bool or a string; NaN fails every comparison after this."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def names(value: Any, name: str) -> tuple[str, ...]:
    """A TOML list of names; a bare string would otherwise be split into its characters."""
    require(isinstance(value, list | tuple), f"`{name}` must be a list, got {value!r}.")
    return tuple(value)


def enum_value(cls: type[E], value: Any, name: str) -> E:
    """`value` as a member of `cls`, or `ConfigError` listing the allowed values."""
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in cls)
        raise ConfigError(f"`{name}` must be one of {allowed}, got {value!r}.") from None


def flag(name: str, value: Any) -> None:
    """A TOML boolean; 1 or "yes" is not one."""
    require(isinstance(value, bool), f"`{name}` must be true or false, got {value!r}.")


def above_zero(name: str, value: Any, *, integer: bool = False) -> None:
    """An integer (`integer`) or a real number, > 0 (∞ allowed: `positive` refuses it)."""
    require((is_int(value) if integer else is_number(value)) and value > 0, f"`{name}` must be > 0, got {value!r}.")


def zero_or_more(name: str, value: Any, *, integer: bool = False) -> None:
    """An integer (`integer`) or a real number, >= 0 (0 usually means "off" or "no cap")."""
    require((is_int(value) if integer else is_number(value)) and value >= 0, f"`{name}` must be >= 0, got {value!r}.")


def fraction(name: str, value: Any) -> None:
    """A real number in [0, 1): a dropout or a moment decay."""
    require(is_number(value) and 0 <= value < 1, f"`{name}` must be in [0, 1), got {value!r}.")


def positive(name: str, value: Any) -> None:
    """A finite real number > 0."""
    require(is_number(value) and 0 < value < math.inf, f"`{name}` must be a finite number > 0, got {value!r}.")


def probability(name: str, value: Any) -> None:
    """A real number in (0, 1): a δ."""
    require(is_number(value) and 0 < value < 1, f"`{name}` must be in (0, 1), got {value!r}.")


def check_table(cls: type, section: str, raw: Any) -> dict[str, Any]:
    """`raw` as a dict, or `ConfigError` naming the section, each unknown key and the allowed ones."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"`[{section}]` must be a table, got {raw!r}.")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(
            f"unknown key(s) in `[{section}]`: {', '.join(unknown)} (allowed: {', '.join(sorted(known))})."
        )
    return dict(raw)


def build(cls: type, section: str, raw: Any) -> Any:
    """Build dataclass `cls` from the TOML table `raw`, rejecting unknown keys by name."""
    raw = check_table(cls, section, raw)
    try:
        return cls(**raw)
    except TypeError as err:  # a missing required key
        raise ConfigError(f"`[{section}]`: {err}") from None
