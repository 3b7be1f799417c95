"""PII scrubbing: every record passes through here before training can see it.

Built on presidio-analyzer (detection), offline: Presidio's no-op NLP engine, a few of its validated pattern recognizers (cards with Luhn, IBAN, email, IP, URL) and Silo's own
recognizers (`client/recognizers.py`) for the HIPAA Safe Harbor identifiers and bank identifiers that
stock Presidio needs an NER model or more context for. A site that has an NER model names it in
`[scrub] ner_model` and gets it on top.

Hostile text is handled before recognition: every field is normalised (`client/normalize.py`: NFKC,
invisible characters removed, dashes, spaces, digits and look-alike letters folded) and recognised in windows
of at most `WINDOW_CHARS` cut at whitespace with `WINDOW_OVERLAP` characters of overlap, so work is linear in
the text's length; what is found maps back to the original characters, which are replaced (linearly here,
not by Presidio's anonymizer, which re-slices the whole text once per entity).

Fail-closed: a record that cannot be scrubbed (not a mapping, a configured field missing or not text, an
exception) or that still shows an identifier on a second pass is quarantined and never returned. Only
`scrub_records` can create `ScrubbedRecords`, so training code can insist on being given scrubbed data.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple, overload

from presidio_analyzer import AnalyzerEngine, EntityRecognizer, RecognizerRegistry, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts, NlpEngineProvider
from presidio_analyzer.predefined_recognizers import CreditCardRecognizer, IbanRecognizer

from client.normalize import normalize, normalized_text
from client.recognizers import (
    NamePlaceRecognizer,
    address_extent,
    name_core,
    name_extent,
    phone_extent,
    propagate_mentions,
    regex_recognizers,
    strict_recognizers,
)
from common import keys
from common.config.scrub import ScrubConfig, ScrubOperator, ScrubProfile
from common.errors import ConfigError, ScrubFailed
from common.version import CODE_VERSION

# The second pass also flags weaker evidence: a record with a near-threshold guess left in it is quarantined.
SECOND_PASS_MARGIN = 0.1
# 16 bytes = 128 bits: below that a pseudonym key could be brute-forced against known names.
MIN_KEY_BYTES = 16
# Hex digits of the HMAC in a pseudonym: 8 = 32 bits, collisions negligible within one site's values.
PSEUDONYM_HEX = 8
# What a scrubbed placeholder looks like; the second pass must not read these as identifiers.
_PLACEHOLDER = re.compile(rf"<[A-Z_]+(?:_[0-9a-f]{{{PSEUDONYM_HEX}}})?>")
# Predefined Presidio entity names mapped onto Silo's vocabulary.
_NER_LABELS = {
    "PERSON": "PERSON",
    "PER": "PERSON",
    "GPE": "LOCATION",
    "LOC": "LOCATION",
    "LOCATION": "LOCATION",
    "FAC": "LOCATION",
    "ORG": "ORGANIZATION",
    "DATE": "DATE_TIME",
}

# Recognition runs on windows of at most this many characters, so a long record costs time linear in its
# length (recognizers and Presidio's duplicate removal are superlinear in what they are given at once).
WINDOW_CHARS = 8192
# Consecutive windows overlap by this much: an identifier with its context of up to half of it lies whole in one.
WINDOW_OVERLAP = 512
_WHITESPACE = re.compile(r"\s")

_SEAL = object()  # only scrub_records holds it: the one way to make ScrubbedRecords
# Parts written around an identifier that its patterns leave out, by entity type.
_EXTENTS: dict[str, Callable[[str, int, int], tuple[int, int]]] = {
    "LOCATION": address_extent,
    "PHONE_NUMBER": phone_extent,
    "PERSON": name_extent,
}


class ScrubbedRecords(Sequence[Mapping[str, Any]]):
    """An immutable sequence of scrubbed records (read-only mappings). Only `scrub_records` can make one."""

    __slots__ = ("_records",)

    def __init__(self, records: Iterable[Mapping[str, Any]], *, _seal: object = None) -> None:
        if _seal is not _SEAL:
            raise ScrubFailed("ScrubbedRecords can only be created by client.scrub.scrub_records(); scrub first.")
        self._records = tuple(MappingProxyType(dict(r)) for r in records)

    def __len__(self) -> int:
        return len(self._records)

    @overload
    def __getitem__(self, index: int) -> Mapping[str, Any]: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[Mapping[str, Any], ...]: ...
    def __getitem__(self, index: int | slice) -> Any:
        return self._records[index]

    def __iter__(self) -> Iterator[Mapping[str, Any]]:
        return iter(self._records)

    def __reduce__(self) -> Any:  # no pickling round-trip that skips the seal
        raise TypeError("ScrubbedRecords cannot be pickled; scrub again where the records are used.")

    def __repr__(self) -> str:
        return f"ScrubbedRecords({len(self._records)} records)"


@dataclass(frozen=True)
class ScrubResult:
    records: ScrubbedRecords
    quarantined: int
    # Counts and configuration only: never a raw value.
    report: dict[str, Any]


class _NerRecognizer(EntityRecognizer):
    """A site's own NER model (a spaCy pipeline directory or package, or a transformers token-classification
    directory), mapped onto PERSON / LOCATION / ORGANIZATION / DATE_TIME and run beside the rules: overlapping
    detections merge into one span, so the model only ever adds to what the rules remove."""

    def __init__(self, model: str) -> None:
        self._model = model
        self._run: Callable[[str], list[tuple[str, int, int, float]]]
        super().__init__(supported_entities=["PERSON", "LOCATION", "ORGANIZATION", "DATE_TIME"], name="SiteNer")

    def load(self) -> None:
        path = Path(self._model)
        if (path / "config.json").is_file() and not (path / "meta.json").is_file():
            from transformers import pipeline

            ner = pipeline("token-classification", model=str(path), aggregation_strategy="simple")
            self._run = lambda text: [
                (str(e["entity_group"]).split("-")[-1], int(e["start"]), int(e["end"]), float(e["score"]))
                for e in ner(text)
            ]
        else:
            import spacy

            nlp = spacy.load(self._model)
            self._run = lambda text: [(e.label_, e.start_char, e.end_char, 0.85) for e in nlp(text).ents]

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        found = [(_NER_LABELS[label], s, e, score) for label, s, e, score in self._run(text) if label in _NER_LABELS]
        # Fused with the rules' propagation: a name the model found once is removed at every other mention,
        # where the model's context may not have fired ("... met Halvorsen. halvorsen said").
        names = [f for f in found if f[0] in ("PERSON", "LOCATION")]
        return [RecognizerResult(*f) for f in (*found, *propagate_mentions(text, names))]


class _Analyzer(AnalyzerEngine):
    """Silo's recognizers carry their context in their patterns, and the no-op NLP engine gives no lemmas to
    enhance with: skip Presidio's context step (it deep-copies and re-filters every result on every call)."""

    _fixed: tuple[list[EntityRecognizer], list[str], NlpArtifacts] | None = None

    def _enhance_using_context(self, text, raw_results, nlp_artifacts, recognizers, context=None):  # type: ignore[no-untyped-def]
        return raw_results

    def detect(self, text: str, score_threshold: float) -> list[RecognizerResult]:
        """`analyze(text, language="en", score_threshold=...)` with the same results, without its per-call
        set-up: the recognizers are fixed once built and the no-op NLP engine reads nothing (that set-up, the
        registry's filtering, the entity list and an empty spaCy document, was a fifth of the scrubber's time)."""
        if self._fixed is None:
            recognizers = self.registry.get_recognizers(language="en", all_fields=True)
            for recognizer in recognizers:
                if not recognizer.is_loaded:
                    recognizer.load()
                    recognizer.is_loaded = True
            artifacts = self.nlp_engine.process_text("", "en")  # the no-op engine's, the same for every text
            self._fixed = (recognizers, self.get_supported_entities(language="en"), artifacts)
        recognizers, entities, artifacts = self._fixed
        results = [
            r
            for recognizer in recognizers
            for r in recognizer.analyze(text=text, entities=entities, nlp_artifacts=artifacts)
            if r.score >= score_threshold
        ]
        return EntityRecognizer.remove_duplicates(results)


def _load_key(path: str) -> bytes:
    keys.refuse_readable_by_others(path)  # the key that makes pseudonyms unlinkable to names is a secret
    try:
        key = Path(path).read_bytes().strip()
    except OSError as err:
        raise ConfigError(f"`scrub.pseudonym_key_file` cannot be read: {path!r} ({err.strerror}).") from None
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(
            f"`scrub.pseudonym_key_file` must hold at least {MIN_KEY_BYTES} bytes, got {len(key)} in {path!r}."
        )
    return key


class Detection(NamedTuple):
    entity_type: str
    start: int
    end: int
    score: float


def windows(text: str, size: int = WINDOW_CHARS, overlap: int = WINDOW_OVERLAP) -> list[tuple[int, int]]:
    """`[start, end)` windows of at most `size` characters covering `text`. A window ends after the last
    whitespace in its second half (a hard cut when there is none) and the next starts after the first
    whitespace in `[end - overlap, end - overlap // 2)` (or at `end - overlap`), so whatever is at most
    `overlap // 2` long lies whole in one window."""
    n = len(text)
    out: list[tuple[int, int]] = []
    start = 0
    while n - start > size:
        limit = start + size
        end = max(text.rfind(c, limit - size // 2, limit) for c in " \n\t") + 1 or limit
        out.append((start, end))
        space = _WHITESPACE.search(text, end - overlap, end - overlap // 2)
        start = space.end() if space else end - overlap
    out.append((start, n))
    return out


def _merge(results: Iterable[Detection]) -> list[Detection]:
    """Overlapping detections become one span covering all of them, typed by the strongest."""
    merged: list[Detection] = []
    for r in sorted(results, key=lambda r: (r.start, -r.end)):
        last = merged[-1] if merged else None
        if last is not None and r.start < last.end:
            best = last if (last.score, last.end - last.start) >= (r.score, r.end - r.start) else r
            merged[-1] = Detection(best.entity_type, last.start, max(last.end, r.end), best.score)
        else:
            merged.append(Detection(r.entity_type, r.start, r.end, r.score))
    return merged


def _join_space_separated(text: str, detections: list[Detection]) -> list[Detection]:
    """Neighbours of one type with only spaces between become one ("Amara" "Okafor": one pseudonym)."""
    out: list[Detection] = []
    for d in detections:
        last = out[-1] if out else None
        gap = text[last.end : d.start] if last is not None and last.entity_type == d.entity_type else ""
        if last is not None and gap and not gap.strip(" "):
            out[-1] = last._replace(end=d.end)
        else:
            out.append(d)
    return out


class Scrubber:
    """Analyzer + anonymizer for one site configuration. Expensive to build: build once, reuse."""

    def __init__(self, config: ScrubConfig, analyzer: _Analyzer, key: bytes | None) -> None:
        self.config = config
        self._analyzer = analyzer
        self._key = key

    def _substitute(self, entity: str, value: str) -> str:
        op = self.config.operator
        if op is ScrubOperator.REDACT:
            return ""
        if op is ScrubOperator.PSEUDONYM:
            return self.pseudonym(entity, value)
        return f"<{entity}>"

    def pseudonym(self, entity_type: str, value: str) -> str:
        """`<TYPE_hhhhhhhh>`: keyed HMAC-SHA256 of the normalised value, the same token for the same value."""
        if self._key is None:
            raise ScrubFailed("pseudonyms need `scrub.pseudonym_key_file`; none was loaded.")
        core = name_core(value) if entity_type == "PERSON" else value  # "Mrs. Okafor" is "Okafor"
        norm = " ".join(normalized_text(core).casefold().split())
        digest = hmac.new(self._key, f"{entity_type}\x00{norm}".encode(), hashlib.sha256).hexdigest()
        return f"<{entity_type}_{digest[:PSEUDONYM_HEX]}>"

    def _detect(self, text: str, *thresholds: float) -> list[list[Detection]]:
        """Detections in normalised `text`, window by window, at each of `thresholds`, from one run of the
        recognizers at the lowest. Each list is what a run at its threshold alone gives: Presidio drops a result
        only for a container of its type scoring at least as high (so dropping commutes with the threshold),
        and names spread to their other mentions from that threshold's own detections."""
        raw: list[Detection] = []
        spans = windows(text)
        for a, b in spans:
            for r in self._analyzer.detect(text[a:b], min(thresholds)):
                raw.append(Detection(r.entity_type, r.start + a, r.end + a, r.score))
        out = []
        for threshold in thresholds:
            found = [d for d in raw if d.score >= threshold]
            if len(spans) > 1:  # a name found in one window is removed where it is mentioned in any other
                seeds = [
                    (d.entity_type, d.start, d.end, d.score) for d in found if d.entity_type in ("PERSON", "LOCATION")
                ]
                found.extend(Detection(*m) for m in propagate_mentions(text, seeds) if m[3] >= threshold)
            # An address's unit, floor and door go with it ("Pikk tee 5 Apt. 31", "Unit 4, 27 Wattle Grove"), a
            # phone number's extension ("x4567"), a name's title and degrees ("Dr. Vukić, MD": gender, profession).
            out.append(
                [
                    Detection(d.entity_type, *_EXTENTS[d.entity_type](text, d.start, d.end), d.score)
                    if d.entity_type in _EXTENTS
                    else d
                    for d in found
                ]
            )
        return out

    def _analyze(self, text: str, *thresholds: float) -> list[list[Detection]]:
        """`analyze` at each of `thresholds`, from one run of the recognizers."""
        norm = normalize(text)
        return [
            _merge(Detection(d.entity_type, *norm.span(d.start, d.end), d.score) for d in found)
            for found in self._detect(norm.text, *thresholds)
        ]

    def analyze(self, text: str, *, score_threshold: float | None = None) -> list[Detection]:
        """Detections in `text`, found in its normalised form, as spans of the original `text`, overlaps merged."""
        threshold = self.config.score_threshold if score_threshold is None else score_threshold
        return self._analyze(text, threshold)[0]

    def scrub_text(self, text: str) -> tuple[str, dict[str, int]]:
        """The text with every detected identifier replaced, and how many of each type were found."""
        if not isinstance(text, str):
            raise ScrubFailed(f"only text can be scrubbed, got {type(text).__name__}.")
        return self._replace(text, self.analyze(text))

    def _replace(self, text: str, results: list[Detection]) -> tuple[str, dict[str, int]]:
        if not results:
            return text, {}
        pieces: list[str] = []
        pos = 0
        for d in _join_space_separated(text, results):
            pieces += (text[pos : d.start], self._substitute(d.entity_type, text[d.start : d.end]))
            pos = d.end
        pieces.append(text[pos:])
        return "".join(pieces), dict(Counter(r.entity_type for r in results))

    def residual(self, scrubbed: str) -> list[str]:
        """Entity types a second, more sensitive pass still finds in scrubbed text (placeholders blanked)."""
        blanked = _PLACEHOLDER.sub(lambda m: "_" * len(m.group()), scrubbed)
        return [r.entity_type for r in self.analyze(blanked, score_threshold=self._residual_threshold())]

    def _residual_threshold(self) -> float:
        return max(0.0, self.config.score_threshold - SECOND_PASS_MARGIN)

    def scrub_checked(self, text: str) -> tuple[str, dict[str, int], list[str]]:
        """`scrub_text`, and `residual` of its result when the config's `second_pass` is on (else []).

        When nothing is replaced and the text holds nothing placeholder-shaped, the second pass would read
        the very text the first did: both come from one run of the recognizers, at the two thresholds."""
        if not isinstance(text, str):
            raise ScrubFailed(f"only text can be scrubbed, got {type(text).__name__}.")
        if not self.config.second_pass:
            return (*self.scrub_text(text), [])
        first, second = self._analyze(text, self.config.score_threshold, self._residual_threshold())
        if first or _PLACEHOLDER.search(text):  # the second pass reads other text than the first did
            scrubbed, counts = self._replace(text, first)
            return scrubbed, counts, self.residual(scrubbed)
        return text, {}, [r.entity_type for r in second]


def build_scrubber(config: ScrubConfig) -> Scrubber:
    """The analyzer for `config`, offline. `ScrubFailed` if it cannot be built; `ConfigError` for a bad key."""
    key = _load_key(config.pseudonym_key_file) if config.pseudonym_key_file else None
    try:
        nlp_engine = NlpEngineProvider(
            nlp_configuration={
                "nlp_engine_name": "no_op",
                "models": [{"lang_code": "en", "model_name": "no_op"}],
            }
        ).create_engine()
        registry = RecognizerRegistry(supported_languages=["en"])
        for recognizer in (
            CreditCardRecognizer(),
            IbanRecognizer(),
            *regex_recognizers(),
            NamePlaceRecognizer(),
        ):
            registry.add_recognizer(recognizer)
        if config.profile is ScrubProfile.STRICT:
            for recognizer in strict_recognizers():
                registry.add_recognizer(recognizer)
        if config.ner_model:
            registry.add_recognizer(_NerRecognizer(config.ner_model))
        analyzer = _Analyzer(nlp_engine=nlp_engine, registry=registry, supported_languages=["en"])
        analyzer.analyze(text="Patient: Test Person, MRN 12345678.", language="en")  # fail now, not mid-run
    except Exception as err:  # any failure to build means nothing can be scrubbed: fail closed
        raise ScrubFailed(f"could not build the PII analyzer: {type(err).__name__}: {err}") from err
    return Scrubber(config, analyzer, key)


def _scrub_record(record: Any, scrubber: Scrubber, entities: Counter[str], residual: Counter[str]) -> str | dict:
    """The scrubbed record, or the reason it is quarantined."""
    if not isinstance(record, Mapping):
        return "not_a_record"
    out = dict(record)
    found: Counter[str] = Counter()
    for name in scrubber.config.fields:
        value = record.get(name)
        if value is None:
            return "missing_field"
        if not isinstance(value, str):
            return "not_text"
        try:
            text, counts, left = scrubber.scrub_checked(value)
        except Exception:  # fail closed: whatever went wrong, this record is not trained on
            return "scrub_error"
        if left:
            residual.update(left)
            return "residual_identifier"
        found.update(counts)
        out[name] = text
    entities.update(found)
    return out


def scrub_records(
    records: Iterable[Any],
    scrubber: Scrubber,
    *,
    progress: Callable[[int], None] | None = None,
) -> ScrubResult:
    """Scrub the configured fields of every record; quarantine what cannot be scrubbed. `progress(n)` is
    called after each record with the number processed so far."""
    kept: list[dict] = []
    entities: Counter[str] = Counter()
    residual: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    n = 0
    for n, record in enumerate(records, start=1):
        outcome = _scrub_record(record, scrubber, entities, residual)
        if isinstance(outcome, str):
            reasons[outcome] += 1
        else:
            kept.append(outcome)
        if progress is not None:
            progress(n)
    quarantined = n - len(kept)
    report = {
        "silo_version": CODE_VERSION,
        "records_in": n,
        "records_out": len(kept),
        "quarantined": quarantined,
        "quarantine_reasons": dict(sorted(reasons.items())),
        "entities": dict(sorted(entities.items())),
        "second_pass_entities": dict(sorted(residual.items())),
        "config": scrubber.config.summary(),
    }
    return ScrubResult(ScrubbedRecords(kept, _seal=_SEAL), quarantined, report)
