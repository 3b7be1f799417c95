"""The one check every config section shares: a TOML table whose keys are the dataclass's fields.

Lives apart from common/config.py because the section modules (config_privacy, config_scrub) are
imported by it and need the same check.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from common.errors import ConfigError


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
