"""`silo demo`: a whole federation on this machine from nothing, offline.

Writes under OUT: a small base model with its tokenizer (`base-model/`), three sites' synthetic
records and TOMLs (`sites/<id>/`), the federation's keys (`keys/`, as `silo keys` makes them), a
federation TOML that names the keys' site registry, then starts a SuperLink (TLS, SuperNode
authentication) and three SuperNodes as separate processes, runs the rounds, and leaves the run
directory in `OUT/run/`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from common import encryption
from common.config import (
    DataConfig,
    FederationConfig,
    FederationSection,
    LoraSettings,
    ModelConfig,
    PrivacyConfig,
    SecuritySection,
    SiteConfig,
    SiteSection,
    StrategyName,
    TaskConfig,
    TaskType,
    TrainingConfig,
)
from common.errors import ConfigError, FederationFailed
from silo.basemodel import build_base_model
from silo.keygen import create_keys
from silo.local_federation import LocalFederation
from silo.run_progress import follow_run
from silo.synthetic import make_bank_messages, make_clinical_notes

# (site id, record maker, seed): two hospitals and a bank, so the sites' data differ (non-IID).
DEMO_SITES = (
    ("hospital-a", make_clinical_notes, 11),
    ("hospital-b", make_clinical_notes, 12),
    ("bank-c", make_bank_messages, 13),
)
# Records per site: enough for the loss to fall visibly in 3 rounds, small enough for 2 cores.
RECORDS_PER_SITE = 240
# The demo's base model is freshly initialised, not pretrained: LoRA on attention alone barely moves
# its loss, so the demo adapter also adapts the output head (a real base model needs only attention).
DEMO_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "lm_head")
# Hidden size of the demo base model: ~0.8M parameters, 0.2 s per step on one CPU thread.
DEMO_HIDDEN_SIZE = 128
# The tokenizer's own corpus: generated from seeds no site uses, standing in for public text.
TOKENIZER_CORPUS_SEED = 999


@dataclass(frozen=True)
class DemoLayout:
    out: Path

    @property
    def base_model(self) -> Path:
        return self.out / "base-model"

    @property
    def federation_config(self) -> Path:
        return self.out / "federation.toml"

    @property
    def run_dir(self) -> Path:
        return self.out / "run"

    @property
    def keys(self) -> Path:
        return self.out / "keys"

    @property
    def registry(self) -> Path:
        return self.keys / "coordinator" / "registry.json"

    @property
    def at_rest_key(self) -> Path:
        return self.keys / "coordinator" / "at_rest.key"

    def site_dir(self, site_id: str) -> Path:
        return self.out / "sites" / site_id

    def site_config(self, site_id: str) -> Path:
        return self.site_dir(site_id) / "site.toml"


def demo_site_config(site_id: str, *, base_model: str, rounds: int) -> SiteConfig:
    """A demo site: DP-SGD on by default, σ derived so the planned rounds spend `target_epsilon`; the
    site refuses any round that would take its total past `budget_epsilon`."""
    return SiteConfig(
        site=SiteSection(id=site_id, state_dir="state"),
        data=DataConfig(dir="data", holdout_fraction=0.2),
        task=TaskConfig(type=TaskType.CAUSAL_LM),
        model=ModelConfig(base=base_model, max_length=128),
        lora=LoraSettings(r=8, alpha=16, dropout=0.0, target_modules=DEMO_LORA_TARGETS),
        training=TrainingConfig(epochs=1, batch_size=16, learning_rate=0.003, threads=1),
        privacy=PrivacyConfig(
            max_grad_norm=1.0,
            target_epsilon=8.0,
            target_delta=1e-5,
            planned_rounds=rounds,
            budget_epsilon=10.0,
            budget_delta=1e-5,
            # Hold-out answers are DP releases. The default noise (20) is for hold-outs of thousands; on the
            # demo's 48 records it would drown the loss (±4 nats). 2 gives ±0.4 a site and raises training's
            # sigma only from 0.76 to 0.84 at these settings (RDP composition; target_epsilon covers both).
            eval_noise_multiplier=2.0,
        ),
    )


def write_site(
    layout: DemoLayout,
    site_id: str,
    records: list[dict[str, str]],
    *,
    base_model: str,
    rounds: int,
    config: SiteConfig | None = None,
) -> Path:
    """The site's records and its site.toml: `config`, or `demo_site_config`, written in full."""
    d = layout.site_dir(site_id)
    (d / "data").mkdir(parents=True, exist_ok=True)
    with (d / "data" / "records.jsonl").open("w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec) + "\n")
    cfg = config if config is not None else demo_site_config(site_id, base_model=base_model, rounds=rounds)
    layout.site_config(site_id).write_text(cfg.to_toml(defaults=True))
    return layout.site_config(site_id)


def write_federation(
    layout: DemoLayout,
    *,
    base_model: str,
    rounds: int,
    min_sites: int,
    strategy: str = "fedavg",
    timeout_s: float = 300.0,
    registry: Path | None = None,
) -> Path:
    config = FederationConfig(
        federation=FederationSection(
            rounds=rounds, min_sites=min_sites, strategy=StrategyName(strategy), round_timeout_s=timeout_s
        ),
        model=ModelConfig(base=base_model, max_length=128),
        lora=LoraSettings(r=8, alpha=16, dropout=0.0, target_modules=DEMO_LORA_TARGETS),
        task=TaskConfig(type=TaskType.CAUSAL_LM),
        # With a registry, each update must be signed by the key registered for its site.
        security=SecuritySection(registry=str(registry)) if registry is not None else SecuritySection(),
    )
    layout.federation_config.write_text(config.to_toml(defaults=True))
    return layout.federation_config


def prepare_demo(
    out: Path,
    *,
    base_model: str | None = None,
    sites: int = 3,
    records: int = RECORDS_PER_SITE,
    rounds: int = 3,
    strategy: str = "fedavg",
    insecure: bool = False,
    encrypt_at_rest: bool = False,
    log: TextIO = sys.stderr,
) -> DemoLayout:
    """Write the base model (unless one is given), the sites, their keys and the federation config."""
    layout = DemoLayout(out.resolve())
    if layout.run_dir.exists() and any(layout.run_dir.iterdir()):
        raise ConfigError(
            f"{layout.run_dir} already holds a run; pick a new --out or resume with `silo federation run`"
        )
    if not 1 <= sites <= len(DEMO_SITES):
        raise ConfigError(f"`--sites` must be between 1 and {len(DEMO_SITES)}, got {sites}")
    if base_model is None:
        print("[demo] building a small base model and training its tokenizer offline ...", file=log)
        corpus = [r.text for r in make_clinical_notes(300, seed=TOKENIZER_CORPUS_SEED)]
        corpus += [r.text for r in make_bank_messages(300, seed=TOKENIZER_CORPUS_SEED)]
        build_base_model(layout.base_model, corpus, hidden_size=DEMO_HIDDEN_SIZE)
        base_model = str(layout.base_model)
    for site_id, make, seed in DEMO_SITES[:sites]:
        recs = [{"text": r.text} for r in make(records, seed=seed)]
        write_site(layout, site_id, recs, base_model=base_model, rounds=rounds)
        print(f"[demo] site {site_id}: {len(recs)} synthetic records with planted identifiers", file=log)
    registry = None
    if not insecure:
        if not layout.registry.exists():  # a rerun into the same OUT keeps its keys
            create_keys(layout.keys, [site_id for site_id, _, _ in DEMO_SITES[:sites]])
        registry = layout.registry
        print(
            f"[demo] keys: CA, SuperLink TLS certificate, per-site SuperNode and signing keys in {layout.keys}",
            file=log,
        )
    if encrypt_at_rest and not layout.at_rest_key.exists():
        encryption.write_key_file(layout.at_rest_key)
    write_federation(
        layout, base_model=base_model, rounds=rounds, min_sites=min(2, sites), strategy=strategy, registry=registry
    )
    return layout


def run_local_federation(
    layout: DemoLayout,
    site_configs: list[Path],
    *,
    timeout: float,
    log: TextIO,
    insecure: bool = False,
    encrypt_at_rest: bool = False,
    superlink_database: bool = False,
) -> dict:
    """Start the processes, run, check the real outcome, stop everything; returns the manifest.
    `superlink_database`: the SuperLink's state in a database file instead of memory (benchmarks)."""
    at_rest = layout.at_rest_key if encrypt_at_rest else None
    with LocalFederation(
        layout.out / "processes",
        site_configs,
        keys=None if insecure else layout.keys,
        insecure=insecure,
        at_rest_key_file=at_rest,
        superlink_database=superlink_database,
    ) as fed:
        mode = "plain text, NO authentication" if insecure else f"TLS, {len(fed.registered)} SuperNode keys registered"
        print(
            f"[demo] SuperLink on {fed.address} ({mode}); {len(site_configs)} SuperNodes (logs in {fed.logs})", file=log
        )
        # A real coordinator puts nginx in front (silo coordinator start); here nothing leaves loopback.
        print("[demo] no Fleet proxy: every process is on loopback, SuperNodes reach the SuperLink directly", file=log)
        run_id = fed.submit({"silo-config": str(layout.federation_config), "run-dir": str(layout.run_dir)})
        print(f"[demo] submitted Flower run {run_id}; rounds appear as the sites report", file=log)
        try:
            return follow_run(fed.connection, run_id, layout.run_dir, timeout=timeout, log=log)
        except FederationFailed as err:
            raise FederationFailed(f"{err} (process logs in {fed.logs})") from None
