"""Courtesy titles and post-nominals around a name (`client/recognizers/titles.py`)."""

import pytest

from client.recognizers.titles import name_core, name_extent, titled_names


def _widened(text: str, name: str) -> str:
    start = text.index(name)
    s, e = name_extent(text, start, start + len(name))
    return text[s:e]


@pytest.mark.parametrize(
    ("text", "name", "expected"),
    [
        ("Seen by Dr. Okonkwo today.", "Okonkwo", "Dr. Okonkwo"),
        ("Mrs Halvorsen called.", "Halvorsen", "Mrs Halvorsen"),
        ("then prof. dr. müller left", "müller", "prof. dr. müller"),
        ("MRS. HALVORSEN agreed", "HALVORSEN", "MRS. HALVORSEN"),
        ("Signed: Tao Xu, MD, PhD. Next.", "Tao Xu", "Tao Xu, MD, PhD"),
        ("John Smith Jr said so", "John Smith", "John Smith Jr"),
        # no title or degree beside it: unchanged; a word ending in a title's letters is no title
        ("Thanks, Okonkwo, for that.", "Okonkwo", "Okonkwo"),
        ("Humdr Okonkwo came", "Okonkwo", "Okonkwo"),
        ("asked Okonkwo do the rounds", "Okonkwo", "Okonkwo"),
    ],
)
def test_name_extent_takes_titles_and_degrees(text, name, expected):
    assert _widened(text, name) == expected


@pytest.mark.parametrize(
    ("value", "core"),
    [("Mrs. Okafor", "Okafor"), ("Dr Teodora Vukić, MD", "Teodora Vukić"), ("Okafor", "Okafor"), ("Dr.", "Dr.")],
)
def test_name_core_drops_titles_and_degrees(value, core):
    assert name_core(value) == core


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("spoke to dr. smith yesterday", ["smith"]),
        ("MRS. HALVORSEN and DR. K. OLAWALE agreed", ["HALVORSEN", "K. OLAWALE"]),
        ("ask mrs halvorsen or ms smith", ["halvorsen", "smith"]),
        ("dr. Teodora vukić called", ["Teodora vukić"]),
    ],
)
def test_titled_names_finds_names_after_a_title_in_any_case(text, names):
    assert [text[s:e] for _, s, e, _ in titled_names(text)] == names


@pytest.mark.parametrize(
    "text",
    [
        "my dr. appointment is at 5",
        "dr appt tomorrow",
        "ms fatigue and ms relapse got worse",
        "MS like the others",
        "Ask Mrs. if she is free",
        "The Dr. will see you now",
    ],
)
def test_titled_names_leaves_titles_without_a_name(text):
    assert titled_names(text) == []
