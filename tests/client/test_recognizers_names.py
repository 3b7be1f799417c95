"""NamePlace's context checks (`client/recognizers/names.py`): matched right to left, they say what Python's
engine says left to right."""

import inspect
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import client.recognizers.names as names
from client.recognizers.pattern import gated

# Every context NamePlace checks with `_ends` (`$`-anchored), with a window it holds in.
CONTEXTS = {
    "_TITLE_BEFORE": "Seen by Dr. ",
    "_LABEL_COMMA": "Patient: ",
    "_STRONG_PERSON_BEFORE": "Thanks, ",
    "_INSTITUTION_BEFORE": "St Mary's Hospital, ",
    "_POSTCODE_BEFORE": "Hauptstr. 5, 49522 ",
    "_DATE_BEFORE": "on May 4, 2023 ",
    "_STRONG_PLACE_BEFORE": "she lives in ",
    "_FACILITY_BEFORE": "was admitted to ",
    "_WEAK_PLACE_BEFORE": "seen @ ",
    "_WEAK_PERSON_BEFORE": "signed by ",
}

# Pieces of the contexts those checks look for, and of ordinary text around them.
_PIECES = [
    "Dr.", "Mrs", "prof", "Patient:", "Name :", "pt:", "Dear", "Thanks,", "regards", "daughter", "son:", "I am",
    "seen by", "--", "—", "lives in", "moved to the", "admitted to", "seen on at", "@", "in", "near", "from", "by",
    "with", "&", "Hospital,", "Medical Center ,", "Clinic,", "49522", "1015 BS", "SW1A 1AA", "114 28", "00-950",
    "H-3914", "K1A 0B1", "2100", ", 38061,", "May 4, 2023", "Sept. 12th, 1999", "the", "and", "Halvorsen", "x",
    "said", "12", ",", ".", ":", "\n", " ", "  ", "\t",
]  # fmt: skip


@pytest.mark.parametrize("name", sorted(CONTEXTS))
@settings(max_examples=300, deadline=None)
@given(pieces=st.lists(st.sampled_from(_PIECES), max_size=12), gap=st.sampled_from(["", " ", "  ", "\n", " \t"]))
def test_a_context_matched_from_the_end_agrees_with_the_forward_search(name, pieces, gap):
    pattern = getattr(names, name)
    before = " ".join(pieces) + gap
    assert names._ends.__wrapped__(pattern, before) == (gated(pattern).search(before) is not None)


def test_the_context_checks_are_all_covered():
    # The pieces above were written for these contexts: a new one needs its own pieces and window here.
    assert set(re.findall(r"_ends\((_[A-Z_]+)", inspect.getsource(names))) == set(CONTEXTS)
    for name, window in CONTEXTS.items():
        pattern = getattr(names, name)
        assert pattern.pattern.endswith("$"), name
        assert names._ends(pattern, window), name
        assert not names._ends(pattern, window + "x "), name
