"""Fixtures shared by the site's tests."""

from __future__ import annotations

from pathlib import Path

import pytest

# The least a site TOML needs to load (a fixed noise multiplier, so no planning inputs).
MINIMAL_SITE_TOML = """
[site]
id = "s-a"
{app}

[model]
base = "tiny"

[privacy]
noise_multiplier = 1.0
max_grad_norm = 1.0
budget_epsilon = 10.0
budget_delta = 1e-5
"""


@pytest.fixture
def write_site_toml(tmp_path: Path):
    """`write_site_toml(site_lines="")` writes tmp_path/site.toml, with extra `[site]` lines, and returns its path."""

    def write(site_lines: str = "") -> Path:
        path = tmp_path / "site.toml"
        path.write_text(MINIMAL_SITE_TOML.format(app=site_lines))
        return path

    return write


# ---- a real site on disk, and the messages Flower hands its handlers -------------------------------------

SITE_ID, SITE_RECORDS = "hosp", 40
SITE_LORA_TARGETS = ("q_proj", "v_proj")  # two of the demo's five: a smaller adapter, the same code paths


@pytest.fixture
def flower_task() -> None:
    """Flower sets the task identity in a real ClientApp process; replies read it."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 7, 1


@pytest.fixture
def make_site(tmp_path: Path, base_model_dir: Path):
    """`make_site(sigma=, budget=, privacy=, root=, warm_runtime=)` writes the demo's site (40 clinical notes,
    LoRA on q_proj and v_proj) with DP-SGD at noise `sigma` and budget `budget`, or the given `privacy`
    section, under `root` (default tmp_path); returns (site.toml, the notes)."""
    from dataclasses import replace

    from common.config import PrivacyConfig
    from silo.demo import DemoLayout, demo_site_config, write_site
    from silo.synthetic import make_clinical_notes

    def make(
        *,
        sigma: float = 1.0,
        budget: float = 10.0,
        privacy: PrivacyConfig | None = None,
        root: Path | None = None,
        warm_runtime: bool = True,
    ) -> tuple[Path, list]:
        notes = make_clinical_notes(SITE_RECORDS, seed=5)
        config = demo_site_config(SITE_ID, base_model=str(base_model_dir), rounds=2)
        config = replace(
            config,
            site=replace(config.site, warm_runtime=warm_runtime),
            lora=replace(config.lora, target_modules=SITE_LORA_TARGETS),
            privacy=privacy
            or PrivacyConfig(max_grad_norm=1.0, noise_multiplier=sigma, budget_epsilon=budget, budget_delta=1e-5),
        )
        layout = DemoLayout(root or tmp_path)
        records = [{"text": r.text} for r in notes]
        cfg = write_site(layout, SITE_ID, records, base_model=str(base_model_dir), rounds=2, config=config)
        return cfg, notes

    return make


@pytest.fixture
def train_message(base_model_dir: Path):
    """`train_message(rnd)`: the coordinator's train message for round `rnd` with a fresh global adapter."""
    from flwr.app import ConfigRecord, Message, MessageType, RecordDict

    from common.adapter import adapter_state, state_to_arrays
    from common.config import LoraSettings, TaskConfig
    from common.model import load_lora_model

    def make(rnd: int) -> Message:
        model = load_lora_model(str(base_model_dir), LoraSettings(target_modules=SITE_LORA_TARGETS), TaskConfig())
        content = RecordDict(
            {
                "arrays": state_to_arrays(adapter_state(model)),
                "config": ConfigRecord({"server-round": rnd, "run-id": "run-test"}),
            }
        )
        return Message(content, dst_node_id=7, message_type=MessageType.TRAIN)

    return make


@pytest.fixture
def site_context():
    """`site_context(cfg)`: the Flower context a SuperNode started with `site-config = cfg` gives the app."""
    from flwr.app import Context, RecordDict

    def make(cfg: Path) -> Context:
        return Context(run_id=1, node_id=7, node_config={"site-config": str(cfg)}, state=RecordDict(), run_config={})

    return make


@pytest.fixture
def site_ledger():
    """`site_ledger(cfg)`: the entries of the site's privacy ledger as written (none before the first)."""
    import json

    def read(cfg: Path) -> list[dict]:
        path = cfg.parent / "state" / "privacy_ledger.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    return read
