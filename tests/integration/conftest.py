"""A small federation on disk: base model, sites and federation TOMLs, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from silo.basemodel import build_base_model
from silo.demo import DemoLayout, write_federation, write_site
from silo.keygen import create_keys
from silo.synthetic import make_bank_messages, make_clinical_notes

# Small enough for a 2-core CI machine: ~0.2M-parameter model, 120 records a site.
RECORDS = 120


@pytest.fixture(scope="session")
def federation_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A base model whose tokenizer learned both kinds of site text (notes and bank messages): not the
    package-wide `base_model_dir` (clinical notes only), so the federations here train on a vocabulary
    that fits every site."""
    out = tmp_path_factory.mktemp("base-model")
    corpus = [r.text for r in make_clinical_notes(150, seed=999)] + [r.text for r in make_bank_messages(150, seed=999)]
    return build_base_model(out, corpus, hidden_size=64, num_layers=2, vocab_size=1024)


def make_layout(
    root: Path,
    base_model: Path,
    *,
    rounds: int,
    sites: int = 2,
    min_sites: int | None = None,
    strategy: str = "fedavg",
    keys: bool = True,
    records: int = RECORDS,
) -> tuple[DemoLayout, list[Path]]:
    """Sites, a federation TOML (a round waits for `min_sites`, default all of them) and (unless `keys=False`)
    the federation's keys in `layout.keys`, whose registry the federation TOML names: start with
    `LocalFederation(..., keys=layout.keys)`."""
    layout = DemoLayout(root)
    makers = [(make_clinical_notes, 21), (make_bank_messages, 22), (make_clinical_notes, 23)]
    configs = []
    for i in range(sites):
        make, seed = makers[i % len(makers)]
        recs = [{"text": r.text} for r in make(records, seed=seed + 10 * (i // len(makers)))]
        configs.append(write_site(layout, f"site-{i}", recs, base_model=str(base_model), rounds=rounds))
    registry = None
    if keys:
        create_keys(layout.keys, [f"site-{i}" for i in range(sites)])
        registry = layout.registry
    write_federation(
        layout,
        base_model=str(base_model),
        rounds=rounds,
        min_sites=sites if min_sites is None else min_sites,
        strategy=strategy,
        timeout_s=180,
        registry=registry,
    )
    return layout, configs


def exact_holdout_loss(site_configs: list[Path], run_dir: Path, round_number: int) -> float:
    """The global adapter of `round_number` evaluated exactly on the sites' own hold-out records, here in
    the test. The manifest's eval_loss is the sites' DP release (noisy by design, ±0.8 a site at 24
    hold-out records); whether a run learned is asserted on this exact figure instead."""
    from safetensors.torch import load_file

    from client.site_data import load_site_data
    from client.train import evaluate
    from common.adapter import load_adapter_state
    from common.config import load_site_config
    from common.model import load_lora_model, load_tokenizer

    adapter_dir = run_dir / "rounds" / str(round_number)
    total, count = 0.0, 0
    for path in site_configs:
        cfg = load_site_config(path)
        data = load_site_data(cfg, load_tokenizer(cfg.model_source()))
        model = load_lora_model(cfg.model_source(), cfg.lora, cfg.task)
        load_adapter_state(model, load_file(adapter_dir / "adapter_model.safetensors"))
        result = evaluate(model, data.holdout, task=cfg.task, device=model.device)
        total += result.loss * result.num_examples
        count += result.num_examples
    return total / count
