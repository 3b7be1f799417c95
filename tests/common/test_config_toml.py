"""Configs write themselves as TOML: what `to_toml()` writes loads back as the same config."""

import math
import tomllib

import pytest

from common.config import (
    Aggregator,
    DataConfig,
    FederationConfig,
    FederationSection,
    LoraSettings,
    ModelConfig,
    PrivacyConfig,
    ScrubConfig,
    ScrubOperator,
    SecAggSection,
    SecuritySection,
    SiteConfig,
    SiteSection,
    TaskConfig,
    TaskType,
    TrainingConfig,
    load_federation_config,
    load_site_config,
)


def _site(privacy: PrivacyConfig, **training) -> SiteConfig:
    return SiteConfig(
        site=SiteSection(id="hosp-1", warm_runtime=False),
        data=DataConfig(holdout_fraction=0.25, seed=3, text_field='note "text"'),
        task=TaskConfig(type=TaskType.CLASSIFICATION, labels=("no", "yes ünï")),
        model=ModelConfig(base="../models/tiny", max_length=64),
        lora=LoraSettings(r=4, target_modules=("q_proj", "lm_head"), ffa=True),
        training=TrainingConfig(**training),
        privacy=privacy,
        scrub=ScrubConfig(operator=ScrubOperator.REDACT, fields=("text", "title"), score_threshold=0.7),
    )


@pytest.mark.parametrize("defaults", [False, True])
@pytest.mark.parametrize(
    "privacy",
    [
        PrivacyConfig(max_grad_norm=0.5, budget_epsilon=8.0, budget_delta=1e-5, noise_multiplier=1.3),
        PrivacyConfig(
            max_grad_norm=1, budget_epsilon=8, budget_delta=1e-5, target_epsilon=4, target_delta=1e-6, planned_rounds=3
        ),
    ],
)
def test_site_config_to_toml_loads_back_equal(tmp_path, privacy, defaults):
    cfg = _site(privacy, batch_size=64, learning_rate=0.003, dropout=0.0, device="cpu")
    path = tmp_path / "site.toml"
    path.write_text(cfg.to_toml(defaults=defaults))

    loaded = load_site_config(path)

    assert loaded == cfg
    assert loaded.root == tmp_path  # relative paths still resolve against the written file


def test_site_config_to_toml_writes_only_what_was_chosen():
    cfg = _site(PrivacyConfig(max_grad_norm=1.0, budget_epsilon=10.0, budget_delta=1e-5, noise_multiplier=1.0))
    raw = tomllib.loads(cfg.to_toml())
    assert raw["training"] == {}  # every training field at its default
    assert raw["lora"] == {"r": 4, "target_modules": ["q_proj", "lm_head"], "ffa": True}
    assert "enabled" not in raw["privacy"] and raw["privacy"]["noise_multiplier"] == 1.0
    complete = tomllib.loads(cfg.to_toml(defaults=True))
    assert complete["training"]["batch_size"] == 16 and complete["privacy"]["enabled"] is True
    assert "dropout" not in complete["training"]  # unset optional fields stay out: TOML has no null


def test_site_config_without_dp_writes_an_infinite_budget(tmp_path):
    with pytest.warns(UserWarning, match="WITHOUT differential privacy"):
        privacy = PrivacyConfig(max_grad_norm=1.0, budget_epsilon=math.inf, budget_delta=1e-5, enabled=False)
    path = tmp_path / "site.toml"
    path.write_text(_site(privacy).to_toml())
    assert tomllib.loads(path.read_text())["privacy"]["budget_epsilon"] == math.inf
    with pytest.warns(UserWarning):
        assert load_site_config(path).privacy == privacy


def test_federation_config_to_toml_loads_back_equal_and_keeps_its_hash(tmp_path):
    cfg = FederationConfig(
        federation=FederationSection(rounds=5, min_sites=3, round_timeout_s=120.0),
        model=ModelConfig(base="/models/tiny"),
        lora=LoraSettings(),
        task=TaskConfig(),
        security=SecuritySection(registry="keys/registry.json", aggregator=Aggregator.MEDIAN),
        secagg=SecAggSection(),
    )
    path = tmp_path / "federation.toml"
    path.write_text(cfg.to_toml())

    loaded = load_federation_config(path)

    assert loaded == cfg and loaded.config_hash() == cfg.config_hash()
    assert set(tomllib.loads(path.read_text())) == {"federation", "model", "lora", "task", "security"}
