"""Normalisation before recognition: hiding tricks fold onto plain text, and every span maps back to the
original characters that produced it."""

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client.normalize import HOMOGLYPHS, normalize


@pytest.mark.parametrize(
    ("original", "folded"),
    [
        ("j\u200bohn@ex\u200bample.com", "john@example.com"),  # zero-width space
        ("555\u2011123\u20114567", "555-123-4567"),  # non-breaking hyphen
        ("555\u2013123\u20134567", "555-123-4567"),  # en dash
        ("555\u2014123\u2212" + "4567", "555-123-4567"),  # em dash, minus sign
        (
            "Thanks.\n\u2014 Ada \u2014 and 5\u200b\u2014\u200b6",
            "Thanks.\n\u2014 Ada \u2014 and 5-6",
        ),  # em dash: only by digits
        ("５５５－１２３－４５６７", "555-123-4567"),  # full-width
        ("4111\u00a01111\u202f1111\u20091111", "4111 1111 1111 1111"),  # no-break, narrow and thin spaces
        ("j\u043ehn@\u0435x\u0430mple.com", "john@example.com"),  # Cyrillic o, e, a
        ("\u039a\u0391\u03a4\u039f \u03a1\u039f", "KATO PO"),  # Greek capitals
        ("Jo\u200chn\u00ad Sm\u2060ith\ufeff", "John Smith"),  # ZWNJ, soft hyphen, word joiner, BOM
        ("\u202ebidi\u202c", "bidi"),  # bidi controls
        ("a\x00b\x1bc", "abc"),  # control characters
        ("\u0665\u0665\u0665-\u0967\u0968", "555-12"),  # Arabic-Indic and Devanagari digits
        ("line\u2028break", "line\nbreak"),
        ("Jose\u0301 \ufb01le", "José file"),  # composed accent, ligature
        ("mail@example\u3002com", "mail@example.com"),  # ideographic full stop
        ("plain ASCII text, untouched.\n", "plain ASCII text, untouched.\n"),
    ],
)
def test_normalize_folds_hiding_tricks(original, folded):
    norm = normalize(original)
    assert norm.text == folded
    s, e = norm.span(0, len(norm.text))
    assert normalize(original[s:e]).text == folded


def test_normalize_span_covers_the_invisible_characters_inside_it():
    original = "mail j\u200bo\u200bhn@example.com now"
    norm = normalize(original)
    start = norm.text.index("john")
    s, e = norm.span(start, start + len("john@example.com"))
    assert original[s:e] == "j\u200bo\u200bhn@example.com"


def test_normalize_span_of_an_expansion_covers_the_whole_original_character():
    norm = normalize("x \ufb01 y")  # the ligature "fi" is one original character
    i = norm.text.index("i")
    assert norm.span(i, i + 1) == (2, 3)


def test_normalize_plain_text_is_returned_as_is():
    text = "Patient: Amara Okafor, MRN 00482913.\n"
    norm = normalize(text)
    assert norm.text is text and norm.identity
    assert norm.span(9, 21) == (9, 21)


_HIDERS = st.sampled_from(["\u200b", "\u200d", "\u00ad", "\u2060", "\ufeff", "\u034f", "\ufe0f", "\x00"])
_PIECES = st.one_of(
    st.text(alphabet=st.characters(codec="ascii", exclude_categories=("Cc",)), max_size=8),
    _HIDERS,
    st.sampled_from(["\u2011", "\u2013", "\u00a0", "\u3000", "５", "Ａ", "\ufb01", "e\u0301", "\u0665"]),
    st.sampled_from(sorted(HOMOGLYPHS)),
    st.text(max_size=4),  # anything at all
)


@settings(max_examples=300, deadline=None)
@given(pieces=st.lists(_PIECES, max_size=30), data=st.data())
def test_normalize_spans_map_back_onto_what_produced_them(pieces, data):
    original = "".join(pieces)
    norm = normalize(original)
    if not norm.text:
        return
    a = data.draw(st.integers(0, len(norm.text) - 1))
    b = data.draw(st.integers(a + 1, len(norm.text)))
    s, e = norm.span(a, b)
    assert 0 <= s < e <= len(original)
    # The original span, normalised on its own, gives back (at least) the normalised span.
    assert norm.text[a:b] in normalize(original[s:e]).text
    # Spans are monotonic: a later character never maps before an earlier one.
    assert norm.start(a) <= norm.start(b - 1) and norm.end(a) <= norm.end(b - 1)


def _cpu_seconds(text: str) -> float:
    start = time.process_time()
    normalize(text)
    return time.process_time() - start


def test_normalize_is_linear_in_length():
    # Non-ASCII characters that all fold, each its own cluster: the slow path. 4x the text must cost about 4x the
    # CPU time (quadratic would be 16x); 8x allows for a noisy shared machine. CPU time, not wall time.
    unit = "５\u2011\u200b"
    small, large = _cpu_seconds(unit * 100_000), _cpu_seconds(unit * 400_000)
    assert large < 8 * max(small, 0.01), (small, large)
    norm = normalize(unit * 10)
    assert norm.text == "5-" * 10
    assert norm.span(len(norm.text) - 1, len(norm.text)) == (len(unit) * 10 - 2, len(unit) * 10 - 1)
