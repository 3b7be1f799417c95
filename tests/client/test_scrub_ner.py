"""A site's NER model, fused with the rules: a real statistical spaCy pipeline, trained here, offline, on a few
hundred synthetic sentences, then named in `[scrub] ner_model` like any site's model directory."""

import random

import pytest

from client.scrub import build_scrubber
from common.config.scrub import ScrubConfig

# Lower-case chat, where no capitalisation, title or keyword gives a name away: only a model can know.
_TEMPLATES = (
    "ok so {} arrived late again",
    "tell {} i am running late",
    "i think {} has the keys",
    "can you ask {} about the invoice",
    "{} said the meeting moved",
    "my sister {} is picking me up",
)
_TRAIN_NAMES = [
    "marta",
    "tomas",
    "aiko",
    "bruno",
    "chidi",
    "elin",
    "farah",
    "goran",
    "hana",
    "ivo",
    "jonas",
    "kemal",
    "lucia",
    "milos",
    "noor",
    "oskar",
    "petra",
    "quinn",
    "rafael",
    "sanna",
    "tariq",
    "ulla",
    "vesna",
    "wendel",
    "xenia",
    "yusuf",
    "zofia",
    "anouk",
    "bjorn",
    "celine",
    "dario",
]
# Names the model never saw in training.
_TEST_NAMES = ("halvor", "teodora", "ngozi", "radek", "ilse", "tavita", "mirela", "joaquin")


@pytest.fixture(scope="module")
def site_ner(tmp_path_factory):
    """A spaCy NER pipeline trained on 300 sentences (fixed seed: the same model on every run)."""
    import spacy
    from spacy.training import Example

    spacy.util.fix_random_seed(0)
    rng = random.Random(0)
    nlp = spacy.blank("en")
    ner = nlp.add_pipe("ner")
    ner.add_label("PERSON")
    examples = []
    for _ in range(300):
        template, name = rng.choice(_TEMPLATES), rng.choice(_TRAIN_NAMES)
        text = template.format(name)
        start = text.index(name)
        examples.append(Example.from_dict(nlp.make_doc(text), {"entities": [(start, start + len(name), "PERSON")]}))
    optimizer = nlp.initialize(lambda: examples)
    for _ in range(12):
        rng.shuffle(examples)
        for i in range(0, len(examples), 16):
            nlp.update(examples[i : i + 16], sgd=optimizer, drop=0.2)
    path = tmp_path_factory.mktemp("ner") / "site-ner"
    nlp.to_disk(path)
    return path


def test_scrub_text_site_ner_finds_names_the_rules_cannot(site_ner):
    rules = build_scrubber(ScrubConfig())
    fused = build_scrubber(ScrubConfig(ner_model=str(site_ner)))
    texts = [t.format(n) for n, t in zip(_TEST_NAMES, _TEMPLATES * 2, strict=False)]
    # The rules alone miss every name but the one after a relative ("my sister tavita") and the one before what
    # only a person does ("ilse said"), cues they know.
    missed = [n for n, t in zip(_TEST_NAMES, texts, strict=False) if n in rules.scrub_text(t)[0]]
    assert missed == [n for n in _TEST_NAMES if n not in ("tavita", "ilse")]
    leaked = [n for n, t in zip(_TEST_NAMES, texts, strict=False) if n in fused.scrub_text(t)[0]]
    assert leaked == []


def test_scrub_text_site_ner_keeps_what_the_rules_find(site_ner):
    fused = build_scrubber(ScrubConfig(ner_model=str(site_ner)))
    text = "ok so ngozi arrived late again. MRN 4417702, call 617-555-0142, seen at Baystate Hospital."
    scrubbed, counts = fused.scrub_text(text)
    for value in ("ngozi", "4417702", "617-555-0142", "Baystate"):
        assert value not in scrubbed
    assert counts["PERSON"] == 1


def test_scrub_report_says_a_site_model_was_used(site_ner):
    assert build_scrubber(ScrubConfig(ner_model=str(site_ner))).config.summary()["ner_model"] is True
