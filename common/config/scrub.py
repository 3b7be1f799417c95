"""`[scrub]` section of the site TOML: how a site removes personal data before anything trains on it."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from common.config.validate import check_table, enum_value
from common.errors import ConfigError


class ScrubOperator(enum.StrEnum):
    REPLACE = "replace"  # "<PERSON>"
    PSEUDONYM = "pseudonym"  # "<PERSON_3f2a9c1e>": keyed HMAC, one value maps to one token within a site
    REDACT = "redact"  # removed


class ScrubProfile(enum.StrEnum):
    STANDARD = "standard"  # identifiers found by pattern, context, vocabulary (and a site's NER model)
    STRICT = "strict"  # also any remaining long digit run or mixed letter-digit code, and organisations


@dataclass(frozen=True)
class ScrubConfig:
    operator: ScrubOperator = ScrubOperator.REPLACE
    # What is masked beyond the standard identifiers: "strict" trades some content for recall.
    profile: ScrubProfile = ScrubProfile.STANDARD
    # Record fields to scrub; every other field is copied unchanged.
    fields: tuple[str, ...] = ("text",)
    # File holding the site's HMAC key (at least 16 bytes); required by the pseudonym operator.
    pseudonym_key_file: str | None = None
    # A spaCy model name/path or a transformers token-classification model dir, on top of the offline set.
    ner_model: str | None = None
    # Detections scoring below this are ignored; 0.5 keeps the weak single-word guesses out (see recognizers).
    score_threshold: float = 0.5
    # Re-analyse scrubbed text and quarantine any record that still shows an identifier.
    second_pass: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "operator", enum_value(ScrubOperator, self.operator, "scrub.operator"))
        object.__setattr__(self, "profile", enum_value(ScrubProfile, self.profile, "scrub.profile"))
        if isinstance(self.fields, list):
            object.__setattr__(self, "fields", tuple(self.fields))
        if (
            not isinstance(self.fields, tuple)
            or not self.fields
            or not all(isinstance(f, str) and f for f in self.fields)
        ):
            raise ConfigError(f"`scrub.fields` must be a non-empty list of field names, got {self.fields!r}.")
        if len(set(self.fields)) != len(self.fields):
            raise ConfigError(f"`scrub.fields` must not repeat a field, got {list(self.fields)!r}.")
        for name in ("pseudonym_key_file", "ner_model"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(f"`scrub.{name}` must be a non-empty string or unset, got {value!r}.")
        if self.operator is ScrubOperator.PSEUDONYM and self.pseudonym_key_file is None:
            raise ConfigError("`scrub.pseudonym_key_file` is required when `scrub.operator` is 'pseudonym', got None.")
        threshold = self.score_threshold
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 <= threshold <= 1:
            raise ConfigError(f"`scrub.score_threshold` must be in [0, 1], got {threshold!r}.")
        if not isinstance(self.second_pass, bool):
            raise ConfigError(f"`scrub.second_pass` must be true or false, got {self.second_pass!r}.")

    @classmethod
    def from_mapping(cls, d: dict[str, Any]) -> ScrubConfig:
        """Build from a TOML table, rejecting unknown keys by name."""
        return cls(**check_table(cls, "scrub", d))

    def summary(self) -> dict[str, Any]:
        """What the scrub report records about the configuration (no key material, no paths)."""
        return {
            "operator": self.operator.value,
            "profile": self.profile.value,
            "fields": list(self.fields),
            "ner_model": self.ner_model is not None,
            "score_threshold": self.score_threshold,
            "second_pass": self.second_pass,
        }
