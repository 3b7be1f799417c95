"""bench/perplexity_medquad.py: the distributed rows' schedule per target epsilon, and the hold-out it is chosen on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import perplexity_medquad as mq
from bench.harness import Configuration
from client.ingest import split_records
from common.config import DataConfig, load_federation_config, load_site_config

RECORDS = [{"prompt": f"What is condition {i}?", "response": f"Condition {i} is rare."} for i in range(30)]


def test_distributed_schedules_cover_every_epsilon() -> None:
    for settings in (mq.QUICK, mq.DEFAULT, mq.FULL):
        assert sorted(settings.distributed) == sorted(mq.EPSILONS)


@pytest.mark.parametrize("epsilon", [1.0, 3.0, 8.0])
def test_run_config_writes_the_distributed_rows_own_schedule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, epsilon: float
) -> None:
    written: dict[str, Any] = {}

    def fake_run(work: Path, sites: list[Path], federation: Path, *, processes: bool) -> tuple[dict, dict]:
        written.update(sites=sites, federation=federation)
        return {}, {}

    monkeypatch.setattr(mq, "run_federation_here", fake_run)
    sites = [(f"site-{i}", RECORDS) for i in range(3)]
    row = Configuration(f"dist{epsilon:g}", "dist", sites, epsilon, distributed=True)
    mq.run_config(tmp_path, row, base=tmp_path, s=mq.DEFAULT, processes=False)

    schedule = mq.DISTRIBUTED[epsilon]
    assert load_federation_config(written["federation"]).federation.rounds == schedule.rounds
    site = load_site_config(written["sites"][0])
    assert (site.training.learning_rate, site.training.batch_size) == (schedule.learning_rate, schedule.batch_size)
    assert site.privacy.eval_noise_multiplier == schedule.eval_noise_multiplier


def test_the_hold_out_a_schedule_is_chosen_on_is_the_sites_own(monkeypatch: pytest.MonkeyPatch) -> None:
    # The bench must score on exactly the records each site holds out (never trains on), not on test.
    seen: dict[str, Any] = {}

    def fake_evaluate(arrays: Any, *, federation_toml: Path, records: list[dict], data: DataConfig) -> Any:
        seen["records"] = records
        return type("Result", (), {"loss": 0.0})()

    monkeypatch.setattr(mq, "evaluate_adapter", fake_evaluate)
    other = [{"prompt": f"Q{i}", "response": f"A{i}"} for i in range(30)]
    assert mq.holdout_perplexity({}, federation_toml=Path("f"), sites=[("a", RECORDS), ("b", other)]) == 1.0

    data = DataConfig()
    expected = [
        r
        for recs in (RECORDS, other)
        for r in split_records(recs, holdout_fraction=data.holdout_fraction, seed=data.seed).holdout
    ]
    assert seen["records"] == expected and 0 < len(expected) < len(RECORDS) + len(other)
