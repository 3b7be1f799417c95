"""Shared fixtures: one tiny Llama base model and its tokenizer for the whole session (no downloads); the
property tests' Hypothesis profile."""

from pathlib import Path

import pytest
from hypothesis import settings

# Property tests draw the same examples on every run and machine (a failure reproduces, a pass is not luck);
# no example database is written into the tree.
settings.register_profile("silo", derandomize=True, database=None)
settings.load_profile("silo")

# Fixtures shared across test packages live in tests/fixtures/, one module per subject.
pytest_plugins = ("tests.fixtures.audit_run",)

# 2 layers of width 64 (~0.3M parameters): a forward pass on a 2-core CPU takes milliseconds.
TINY_HIDDEN_SIZE = 64
TINY_NUM_LAYERS = 2
# 60 notes give the BPE enough text to learn words, not just bytes, in about a second.
TOKENIZER_CORPUS_SIZE = 60


@pytest.fixture(scope="session")
def base_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny Llama and BPE tokenizer, loadable with `from_pretrained(dir)`."""
    from silo.basemodel import build_base_model
    from silo.synthetic import make_clinical_notes

    texts = [record.text for record in make_clinical_notes(TOKENIZER_CORPUS_SIZE, seed=0)]
    out = tmp_path_factory.mktemp("tiny-llama")
    return build_base_model(out, texts, hidden_size=TINY_HIDDEN_SIZE, num_layers=TINY_NUM_LAYERS)


@pytest.fixture(scope="session")
def tokenizer(base_model_dir: Path):
    from common.model import load_tokenizer

    return load_tokenizer(str(base_model_dir))
