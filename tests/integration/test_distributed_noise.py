"""Distributed noise through the real pipeline, in process: the coordinator's round loop with secure
aggregation (server/federation.py, server/secagg.py) against the sites' real handlers (ingest, scrub,
one DP-FedSGD step with a Skellam share, signed ledger, masking), over bench/harness.py's InProcessGrid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.harness import (
    Configuration,
    distributed_epsilons,
    model_sections,
    privacy_columns,
    privacy_config,
    run_federation_here,
    write_federation_toml,
    write_site_toml,
)
from common.config import TrainingConfig
from server.checkpoint import RunDirectory
from silo.synthetic import make_clinical_notes

SITES = 3
ROUNDS = 2
EPSILON = 50.0  # a loose budget: the test is about the message flow and the records, not the utility


def _federation(root: Path, base_model: Path) -> tuple[list[Path], Path]:
    model = model_sections(base=base_model, max_length=32, lora_r=2, lora_alpha=4, targets=("q_proj", "v_proj"))
    # Expected batch 20 of 48 training records, SGD rate 0.05: one record's step is 0.0025 / grid step 2^-27,
    # ~3e5 integers, well inside the planner's [1, 2^40].
    training = TrainingConfig(batch_size=20, learning_rate=0.05, threads=1)
    privacy = privacy_config(EPSILON, rounds=ROUNDS, distributed_min_honest=SITES)
    configs = []
    for i in range(SITES):
        site_dir = root / f"site-{i}"
        (site_dir / "data").mkdir(parents=True)
        notes = make_clinical_notes(60, seed=40 + i)
        (site_dir / "data" / "records.jsonl").write_text("".join(json.dumps({"text": r.text}) + "\n" for r in notes))
        configs.append(write_site_toml(site_dir, f"site-{i}", model=model, training=training, privacy=privacy))
    fed = write_federation_toml(root / "federation.toml", model=model, rounds=ROUNDS, min_sites=SITES, secagg=True)
    return configs, fed


@pytest.mark.slow  # three sites' scrub and model loads, two SecAgg rounds: ~20 s of CPU
def test_in_process_distributed_noise_runs_rounds_over_secagg_and_records_both_epsilons(tmp_path, base_model_dir):
    configs, fed = _federation(tmp_path, base_model_dir)

    manifest, arrays = run_federation_here(tmp_path, configs, fed, processes=False)

    train = [r for r in manifest["rounds"] if r.get("kind") == "train"]
    assert [r["round"] for r in train] == list(range(1, ROUNDS + 1))
    for record in train:
        assert record["secagg"]["noise"] == "distributed"
        assert record["secagg"]["min_honest"] == SITES
        assert sorted(record["secagg"]["sites"]) == [1000, 1001, 1002]
        for site in record["sites"]:
            distributed = site["privacy"]["distributed"]
            assert distributed["trust_model"] == "distributed" and distributed["min_honest"] == SITES
            # The site's own share has 1/t of the counted variance: relying on it alone costs more.
            assert float(distributed["epsilon_total_sum"]) < float(distributed["epsilon_total_own"])
    total_sum, total_own = distributed_epsilons(manifest)
    assert 0 < total_sum <= EPSILON < total_own
    row = privacy_columns(manifest, Configuration("dist", "distributed", [], EPSILON, distributed=True))
    assert (row["epsilon_spent"], row["epsilon_own_noise"]) == (total_sum, total_own)
    # The unmasked sum moved the adapter: round 0's LoRA B is zero, the final one is not.
    initial, _ = RunDirectory(tmp_path / "run", manifest).load_round(0)
    moved = [k for k in arrays if not np.array_equal(arrays[k], initial[k])]
    assert moved
    # Each site's ledger recorded one distributed round per round, besides its hold-out answers.
    for path in configs:
        entries = [json.loads(x) for x in (path.parent / "state" / "privacy_ledger.jsonl").read_text().splitlines()]
        rounds = [e for e in entries if e["kind"] == "round"]
        assert len(rounds) == ROUNDS and all(e["distributed"]["min_honest"] == SITES for e in rounds)
