"""Offline recognizers for the scrubber: HIPAA Safe Harbor and bank identifiers without an NER model.

One module per concept:
- `pattern`: `RegexRecognizer` and the "keyword + value" pattern builder;
- `identifiers`: record, plan, account, licence, vehicle and device numbers, SSNs, dates, ages, cards, ...;
- `phones`: phone numbers in written forms and after a keyword;
- `addresses`: street addresses, postcodes, PO boxes and military mail;
- `address_extent`: the unit, floor and door beside an address, and the town, region and postcode after it;
- `organisations`: hospitals, clinics, employers, banks by their head word;
- `strict`: the strict profile's extra masks (long digit runs, letter-digit codes, handles);
- `titles`: courtesy titles and post-nominals around a name, and names after a title in any case;
- `names`: people and places from context, name lists and rarity, propagated to every mention;
- `uncased`: names that capitalisation does not show (lower-case chat, scripts without capitals);
- `vocabulary`: what counts as an everyday word, a rare word, a listed name.
"""

from __future__ import annotations

from presidio_analyzer import EntityRecognizer

from client.recognizers.address_extent import address_extent
from client.recognizers.addresses import US_STATE_CODES, address_recognizers
from client.recognizers.identifiers import identifier_recognizers
from client.recognizers.names import NamePlaceRecognizer, propagate_mentions
from client.recognizers.organisations import organisation_recognizers
from client.recognizers.phones import phone_extent, phone_recognizers
from client.recognizers.strict import strict_recognizers
from client.recognizers.titles import name_core, name_extent
from client.recognizers.vocabulary import NAME_LIST_LOCALES, common_words, is_common, name_tokens

__all__ = [
    "NAME_LIST_LOCALES",
    "US_STATE_CODES",
    "address_extent",
    "NamePlaceRecognizer",
    "common_words",
    "is_common",
    "name_core",
    "name_extent",
    "name_tokens",
    "phone_extent",
    "propagate_mentions",
    "regex_recognizers",
    "strict_recognizers",
]


def regex_recognizers() -> list[EntityRecognizer]:
    """The offline pattern recognizers, one per entity type."""
    return [*identifier_recognizers(), *phone_recognizers(), *address_recognizers(), *organisation_recognizers()]
