"""Reading untrusted JSON-shaped records into frozen dataclasses, one clear error per bad field.

`Fields` wraps one JSON object (a site's declaration off the wire, a manifest off the disk) and hands
out its fields type-checked; `done()` refuses fields nobody asked for, so that a writer and a reader
cannot drift apart silently. Every problem raises the caller's `SiloError` child with a message that
names where and which field, never the field's value (a declaration's strings come from another party).

Infinite ε is written as the string "inf" (strict JSON has no infinity), as the privacy ledger does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from common.errors import SiloError

INF = "inf"


def number_or_inf(value: float) -> float | str:
    """A float for strict JSON: +inf as "inf"."""
    return INF if math.isinf(value) and value > 0 else float(value)


def decode_epsilon(raw: float | int | str) -> float:
    """An ε as written (a number, "inf", or Python's "Infinity") back to a float."""
    return math.inf if raw in (INF, "Infinity") else float(raw)


def strict_json(value: Any) -> Any:
    """`value` with every infinite float as "inf" / "-inf" and NaN as null: strict JSON has neither."""
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return INF if value > 0 else "-inf"
        return value
    if isinstance(value, dict):
        return {str(k): strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    return value


class Fields:
    """The fields of one JSON object at `where` (e.g. "privacy declaration", "manifest round 3")."""

    def __init__(self, obj: Any, where: str, error: type[SiloError]) -> None:
        if not isinstance(obj, Mapping):
            raise error(f"{where} must be a JSON object, got {type(obj).__name__}")
        self.obj, self.where, self.error = obj, where, error
        self.read: set[str] = set()

    def fail(self, name: str, problem: str) -> SiloError:
        return self.error(f"{self.where}: `{name}` {problem}")

    def _get(self, name: str, required: bool) -> Any:
        self.read.add(name)
        if name not in self.obj or self.obj[name] is None:
            if required:
                raise self.fail(name, "is missing")
            return None
        return self.obj[name]

    def text(self, name: str) -> str:
        value = self._get(name, True)
        if not isinstance(value, str):
            raise self.fail(name, f"must be a string, got {type(value).__name__}")
        return value

    def opt_text(self, name: str) -> str | None:
        return None if self._get(name, False) is None else self.text(name)

    def sha256(self, name: str) -> str:
        value = self.text(name)
        if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            raise self.fail(name, "must be 64 lowercase hex digits")
        return value

    def opt_sha256(self, name: str) -> str | None:
        return None if self._get(name, False) is None else self.sha256(name)

    def flag(self, name: str) -> bool:
        value = self._get(name, True)
        if not isinstance(value, bool):
            raise self.fail(name, f"must be true or false, got {type(value).__name__}")
        return value

    def integer(self, name: str, *, minimum: int | None = None) -> int:
        value = self._get(name, True)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(name, f"must be an integer, got {type(value).__name__}")
        if minimum is not None and value < minimum:
            raise self.fail(name, f"must be >= {minimum}, got {value}")
        return value

    def opt_integer(self, name: str, *, minimum: int | None = None) -> int | None:
        return None if self._get(name, False) is None else self.integer(name, minimum=minimum)

    def number(self, name: str, *, minimum: float | None = None, allow_inf: bool = False) -> float:
        """A finite number (ints included); "inf" or +Infinity only with `allow_inf`. Never NaN."""
        value = self._get(name, True)
        if allow_inf and value == INF:
            return math.inf
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(name, f"must be a number, got {type(value).__name__}")
        number = float(value)
        if math.isnan(number) or (math.isinf(number) and not (allow_inf and number > 0)):
            raise self.fail(name, "must be a finite number" + (' or "inf"' if allow_inf else ""))
        if minimum is not None and number < minimum:
            raise self.fail(name, f"must be >= {minimum:g}, got {number:g}")
        return number

    def opt_number(self, name: str, *, minimum: float | None = None) -> float | None:
        return None if self._get(name, False) is None else self.number(name, minimum=minimum)

    def mapping(self, name: str) -> dict[str, Any]:
        value = self._get(name, True)
        if not isinstance(value, Mapping):
            raise self.fail(name, f"must be a JSON object, got {type(value).__name__}")
        return dict(value)

    def opt_mapping(self, name: str) -> dict[str, Any] | None:
        return None if self._get(name, False) is None else self.mapping(name)

    def items(self, name: str) -> list[Any]:
        value = self._get(name, False)
        if value is None:
            return []
        if not isinstance(value, list | tuple):
            raise self.fail(name, f"must be a list, got {type(value).__name__}")
        return list(value)

    def rest(self) -> dict[str, Any]:
        """The fields not read so far (and marks them read)."""
        out = {k: v for k, v in self.obj.items() if k not in self.read}
        self.read.update(out)
        return out

    def done(self) -> None:
        unknown = sorted(str(k) for k in self.obj if k not in self.read)
        if unknown:
            raise self.error(f"{self.where}: unknown field(s) {', '.join(f'`{k}`' for k in unknown[:5])}")


def without_none(obj: dict[str, Any]) -> dict[str, Any]:
    """A record's JSON form leaves out optional fields that are not set."""
    return {k: v for k, v in obj.items() if v is not None}
