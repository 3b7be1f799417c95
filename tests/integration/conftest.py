"""A small federation on disk: base model, sites and federation TOMLs, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.pki import create_keys
from silo.basemodel import build_base_model
from silo.demo import DemoLayout, write_federation, write_site
from silo.synthetic import make_bank_messages, make_clinical_notes

# Small enough for a 2-core CI machine: ~0.2M-parameter model, 120 records a site.
RECORDS = 120


@pytest.fixture(scope="session")
def base_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("base-model")
    corpus = [r.text for r in make_clinical_notes(150, seed=999)] + [r.text for r in make_bank_messages(150, seed=999)]
    return build_base_model(out, corpus, hidden_size=64, num_layers=2, vocab_size=1024)


def make_layout(
    root: Path, base_model: Path, *, rounds: int, sites: int = 2, strategy: str = "fedavg", keys: bool = True
) -> tuple[DemoLayout, list[Path]]:
    """Sites, a federation TOML and (unless `keys=False`) the federation's keys in `layout.keys`, whose
    registry the federation TOML names: start with `LocalFederation(..., keys=layout.keys)`."""
    layout = DemoLayout(root)
    makers = [(make_clinical_notes, 21), (make_bank_messages, 22), (make_clinical_notes, 23)]
    configs = []
    for i in range(sites):
        make, seed = makers[i]
        records = [{"text": r.text} for r in make(RECORDS, seed=seed)]
        configs.append(write_site(layout, f"site-{i}", records, base_model=str(base_model), rounds=rounds))
    registry = None
    if keys:
        create_keys(layout.keys, [f"site-{i}" for i in range(sites)])
        registry = layout.registry
    write_federation(
        layout,
        base_model=str(base_model),
        rounds=rounds,
        min_sites=sites,
        strategy=strategy,
        timeout_s=180,
        registry=registry,
    )
    return layout, configs
