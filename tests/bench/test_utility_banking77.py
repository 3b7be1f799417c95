"""bench/utility_banking77.py: the distributed rows' schedule per target epsilon."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bench import utility_banking77 as b77
from bench.harness import Configuration, add_distributed_overrides
from common.config import FederationConfig, SiteConfig, load_federation_config, load_site_config


def test_distributed_schedules_cover_every_epsilon() -> None:
    for settings in (b77.QUICK, b77.DEFAULT, b77.FULL):
        assert sorted(settings.distributed) == sorted(b77.EPSILONS)


def test_distributed_schedule_eps8_and_eps3_keep_the_measured_one() -> None:
    measured = b77.FedSGDSchedule(
        rounds=30, batch_size=3000, learning_rate=64.0, eval_noise_multiplier=60.0, lora_alpha=0.125, ffa=True
    )
    assert b77.distributed_schedule(b77.DEFAULT.distributed, 8.0) == measured
    assert b77.distributed_schedule(b77.DEFAULT.distributed, 3.0) == measured


def test_distributed_schedule_eps1_takes_fewer_smaller_steps() -> None:
    eps1 = b77.distributed_schedule(b77.DEFAULT.distributed, 1.0)
    assert (eps1.rounds, eps1.learning_rate) == (15, 32.0)
    assert eps1 == replace(b77.DISTRIBUTED_EPS8, rounds=15, learning_rate=32.0)


def test_distributed_schedule_unknown_epsilon_names_it() -> None:
    with pytest.raises(ValueError, match=r"eps=2 \(it has eps 1, 3, 8\)"):
        b77.distributed_schedule(b77.DEFAULT.distributed, 2.0)


def test_describe_schedule_names_rounds_rate_and_alpha() -> None:
    line = b77.describe_schedule(b77.DISTRIBUTED[1.0], lora_r=1)
    assert line.startswith("15 rounds x 1 DP-FedSGD step, expected batch 3000 a site, SGD lr 32, LoRA alpha 0.125")
    assert "(FFA)" in line
    assert "LoRA alpha 2 (FFA)" in b77.describe_schedule(replace(b77.DISTRIBUTED[1.0], lora_alpha=None), lora_r=1)


def test_distributed_overrides_replace_every_epsilons_value() -> None:
    ap = argparse.ArgumentParser()
    add_distributed_overrides(ap)
    args = ap.parse_args(["--distributed-rounds", "7"])
    schedules = b77.override_distributed_schedules(b77.DISTRIBUTED, args)
    assert {eps: d.rounds for eps, d in schedules.items()} == {1.0: 7, 3.0: 7, 8.0: 7}
    assert schedules[1.0].learning_rate == 32.0 and schedules[8.0].learning_rate == 64.0


LABELS = ["card_arrival", "card_linking"]
RECORDS = [{"text": f"query {i}", "category": LABELS[i % 2]} for i in range(20)]


def written_configs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, row: Configuration, s: b77.Settings
) -> tuple[FederationConfig, SiteConfig]:
    """The federation and first site config `run_config` writes for `row` (the federation is not run)."""
    written: dict[str, Any] = {}

    def fake_run(work: Path, sites: list[Path], federation: Path, *, processes: bool) -> tuple[dict, dict]:
        written.update(sites=sites, federation=federation)
        return {}, {}

    monkeypatch.setattr(b77, "run_federation_here", fake_run)
    b77.run_config(tmp_path / row.key, row, labels=LABELS, encoder=tmp_path, s=s, processes=False)
    return load_federation_config(written["federation"]), load_site_config(written["sites"][0])


@pytest.mark.parametrize("epsilon", [1.0, 8.0])
def test_run_config_writes_the_rows_schedule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, epsilon: float) -> None:
    row = Configuration(f"dist{epsilon:g}", "dist", [RECORDS] * 3, epsilon, distributed=True)
    federation, site = written_configs(tmp_path, monkeypatch, row, b77.QUICK)

    schedule = b77.DISTRIBUTED[epsilon]
    assert federation.federation.rounds == schedule.rounds
    assert federation.lora.alpha == schedule.lora_alpha and federation.lora.ffa
    assert site.training.learning_rate == schedule.learning_rate
    assert site.training.batch_size == schedule.batch_size
    assert site.privacy.eval_noise_multiplier == schedule.eval_noise_multiplier


@pytest.mark.parametrize(("key", "epsilon"), [("dp8", 8.0), ("dp1", 1.0)])
def test_run_config_gives_a_local_noise_row_its_fedsgd_schedule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str, epsilon: float
) -> None:
    federation, site = written_configs(
        tmp_path, monkeypatch, Configuration(key, "dp", [RECORDS] * 3, epsilon), b77.DEFAULT
    )

    schedule = b77.LOCAL_FEDSGD[key]
    assert federation.federation.rounds == schedule.rounds and not federation.secagg.enabled
    assert federation.lora.alpha == schedule.lora_alpha and federation.lora.ffa
    assert site.privacy.noise.value == "local"
    assert site.training.optimizer == "sgd" and site.training.epochs == 1 and site.training.probe_rounds == 0
    assert (site.training.learning_rate, site.training.batch_size) == (schedule.learning_rate, schedule.batch_size)
    assert site.training.batch_size >= len(RECORDS)  # q = 1: one step a round over every record


@pytest.mark.parametrize(("key", "local"), [("dp8", False), ("single0", True)], ids=["--local-recipe", "single-site"])
def test_local_noise_rows_without_a_schedule_run_the_multi_epoch_recipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str, local: bool
) -> None:
    s = b77.DEFAULT if local else replace(b77.DEFAULT, local={})
    _, site = written_configs(tmp_path, monkeypatch, Configuration(key, "x", [RECORDS], 8.0), s)

    assert site.training.optimizer == "adamw" and site.training.epochs == b77.DEFAULT.local_epochs
    assert site.training.probe_rounds == b77.DEFAULT.probe_rounds


def test_the_accountant_setting_reaches_the_local_noise_rows_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = b77.DEFAULT  # PRV by default: the tighter bound
    _, local = written_configs(tmp_path, monkeypatch, Configuration("dp3", "dp", [RECORDS] * 3, 3.0), s)
    _, dist = written_configs(
        tmp_path, monkeypatch, Configuration("dist3", "d", [RECORDS] * 3, 3.0, distributed=True), s
    )
    _, rdp = written_configs(
        tmp_path / "rdp", monkeypatch, Configuration("dp3", "dp", [RECORDS] * 3, 3.0), replace(s, accountant="rdp")
    )

    assert local.privacy.accountant == "prv" and dist.privacy.accountant == "rdp"
    assert rdp.privacy.accountant == "rdp"
