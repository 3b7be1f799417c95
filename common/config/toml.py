"""Configs to and from TOML: reading a file (errors name it), and writing a config back as TOML.

`to_toml()` writes each section's fields in declaration order and leaves out what equals the field's
default (and every unset optional field), so a written config says what was chosen and nothing else;
`to_toml(defaults=True)` writes every set field, a complete example. Either way `load_site_config(path)`
of what it writes gives the same config back.
"""

from __future__ import annotations

import enum
import math
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import MISSING, fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

from common.errors import ConfigError

T = TypeVar("T")


def read_toml(path: str | Path) -> tuple[dict[str, Any], Path]:
    """The parsed file and its directory (relative paths in it resolve against that)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh), p.resolve().parent
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{p}: invalid TOML: {err}") from None


def check_sections(raw: dict[str, Any], allowed: Iterable[str], path: str | Path) -> None:
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))}).")


def with_path(path: str | Path, build: Callable[[], T]) -> T:
    """`build()`, with the file's path in front of any ConfigError it raises."""
    try:
        return build()
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def section_toml(name: str, section: Any, *, defaults: bool = False) -> str:
    """`[name]` and the fields of dataclass `section` that are set (all, or those that differ from their
    defaults)."""
    lines = [f"[{name}]"]
    for f in fields(section):
        value = getattr(section, f.name)
        if value is None or not f.init:
            continue
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        if not defaults and default is not MISSING and _same(value, default):
            continue
        lines.append(f"{f.name} = {toml_value(value)}")
    return "\n".join(lines) + "\n"


def sections_toml(sections: Iterable[tuple[str, Any]], *, defaults: bool = False) -> str:
    """The given `(name, section)` pairs as one TOML document; a None section is left out."""
    return "\n".join(section_toml(name, s, defaults=defaults) for name, s in sections if s is not None)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return _basic_string(str(value.value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            raise ConfigError("a config value is NaN; TOML could hold it, but no Silo setting may be NaN.")
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str | Path):
        return _basic_string(str(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if is_dataclass(value):
        raise ConfigError(f"a nested section ({type(value).__name__}) is written with section_toml, not inline.")
    raise ConfigError(f"cannot write a {type(value).__name__} to TOML.")


# A basic string's escapes, as JSON writes them; every other character outside printable ASCII is \uXXXX,
# or \UXXXXXXXX beyond U+FFFF (where JSON writes a surrogate pair, which TOML rejects).
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _basic_string(text: str) -> str:
    """`text` as a TOML basic string in ASCII (the same characters `json.dumps` writes for text within U+FFFF)."""
    out = []
    for c in text:
        code = ord(c)
        if c in _ESCAPES:
            out.append(_ESCAPES[c])
        elif " " <= c <= "~":
            out.append(c)
        elif 0xD800 <= code <= 0xDFFF:
            raise ConfigError(f"a config string holds a lone surrogate (U+{code:04X}), which no TOML file can.")
        else:
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


def _same(value: Any, default: Any) -> bool:
    if isinstance(value, list | tuple) and isinstance(default, list | tuple):
        return tuple(value) == tuple(default)
    return type(value) is type(default) and value == default  # 0 is written where the default is 0.0
