"""Site and federation TOML: frozen dataclasses, messages that name the field and the value, paths, hash."""

import dataclasses
from pathlib import Path

import pytest

from common.config import (
    FederationConfig,
    Precision,
    SiteConfig,
    StrategyName,
    TaskType,
    load_federation_config,
    load_site_config,
)
from common.errors import ConfigError

SITE_TOML = """\
[site]
id = "hospital-a"
state_dir = "state"

[data]
dir = "records"
holdout_fraction = 0.25

[task]
type = "classification"
labels = ["routine", "urgent"]

[model]
base = "../models/tiny"
max_length = 64

[lora]
r = 4
alpha = 8
target_modules = ["q_proj", "v_proj"]

[training]
epochs = 2
batch_size = 8
learning_rate = 0.005
precision = "fp32"

[privacy]
max_grad_norm = 1.0
noise_multiplier = 1.0
budget_epsilon = 10.0
budget_delta = 1e-5
"""

FEDERATION_TOML = """\
[federation]
rounds = 5
min_sites = 3
strategy = "fedadam"
server_learning_rate = 0.05

[model]
base = "models/tiny"

[lora]
r = 4

[task]
type = "causal_lm"
"""


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _replace(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new)


def test_load_site_config_reads_a_good_file(tmp_path):
    cfg = load_site_config(_write(tmp_path / "site.toml", SITE_TOML))

    assert isinstance(cfg, SiteConfig)
    assert cfg.site.id == "hospital-a"
    assert cfg.task.type is TaskType.CLASSIFICATION and cfg.task.labels == ("routine", "urgent")
    assert cfg.lora.r == 4 and cfg.lora.alpha == 8 and cfg.lora.target_modules == ("q_proj", "v_proj")
    assert cfg.training.epochs == 2 and cfg.training.precision is Precision.FP32
    assert cfg.data.holdout_fraction == 0.25 and cfg.model.max_length == 64
    assert cfg.privacy.max_grad_norm == 1.0 and cfg.privacy.noise_multiplier == 1.0


def test_load_federation_config_reads_a_good_file(tmp_path):
    cfg = load_federation_config(_write(tmp_path / "federation.toml", FEDERATION_TOML))

    assert isinstance(cfg, FederationConfig)
    assert cfg.federation.rounds == 5 and cfg.federation.min_sites == 3
    assert cfg.federation.strategy is StrategyName.FEDADAM
    assert cfg.federation.server_learning_rate == 0.05
    assert cfg.federation.beta1 == 0.9  # default kept
    assert cfg.task.type is TaskType.CAUSAL_LM


def test_load_site_config_is_frozen(tmp_path):
    cfg = load_site_config(_write(tmp_path / "site.toml", SITE_TOML))

    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lora.r = 64
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.training = None
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.privacy.noise_multiplier = 0.0


def test_load_federation_config_is_frozen(tmp_path):
    cfg = load_federation_config(_write(tmp_path / "federation.toml", FEDERATION_TOML))

    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.federation.rounds = 100


@pytest.mark.parametrize(
    ("old", "new", "field", "value"),
    [
        ("r = 4", "r = 0", "`lora.r`", "0"),
        ("alpha = 8", "alpha = -1", "`lora.alpha`", "-1"),
        ('target_modules = ["q_proj", "v_proj"]', "target_modules = []", "`lora.target_modules`", "[]"),
        ('target_modules = ["q_proj", "v_proj"]', 'target_modules = "q_proj"', "`lora.target_modules`", "'q_proj'"),
        ('id = "hospital-a"', 'id = "hospital a/b"', "`site.id`", "'hospital a/b'"),
        ("holdout_fraction = 0.25", "holdout_fraction = 1.0", "`data.holdout_fraction`", "1.0"),
        ('type = "classification"', 'type = "regression"', "`task.type`", "'regression'"),
        ('labels = ["routine", "urgent"]', 'labels = ["routine"]', "`task.labels`", "['routine']"),
        ('labels = ["routine", "urgent"]', 'labels = ["a", "a"]', "`task.labels`", "['a', 'a']"),
        ('labels = ["routine", "urgent"]', 'labels = "ab"', "`task.labels`", "'ab'"),
        ("max_length = 64", "max_length = 0", "`model.max_length`", "0"),
        ("epochs = 2", "epochs = 0", "`training.epochs`", "0"),
        ("epochs = 2", "epochs = true", "`training.epochs`", "True"),
        ("batch_size = 8", 'batch_size = "8"', "`training.batch_size`", "'8'"),
        ("learning_rate = 0.005", "learning_rate = -0.1", "`training.learning_rate`", "-0.1"),
        ('precision = "fp32"', 'precision = "fp8"', "`training.precision`", "'fp8'"),
        ('precision = "fp32"', 'device = "tpu"', "`training.device`", "'tpu'"),
        ('precision = "fp32"', "dropout = 1.0", "`training.dropout`", "1.0"),
        ('precision = "fp32"', 'optimizer = "adam"', "`training.optimizer` must be one of 'adamw', 'sgd'", "'adam'"),
        ("max_grad_norm = 1.0", "max_grad_norm = 0.0", "`max_grad_norm`", "0.0"),
    ],
)
def test_load_site_config_names_the_bad_field_and_value(tmp_path, old, new, field, value):
    path = _write(tmp_path / "site.toml", _replace(SITE_TOML, old, new))

    with pytest.raises(ConfigError) as err:
        load_site_config(path)

    message = str(err.value)
    assert field in message and value in message, message
    assert str(path) in message


@pytest.mark.parametrize(
    ("old", "new", "field", "value"),
    [
        ("rounds = 5", "rounds = 0", "`federation.rounds`", "0"),
        ("min_sites = 3", "min_sites = -2", "`federation.min_sites`", "-2"),
        ("server_learning_rate = 0.05", "server_learning_rate = 0.0", "`federation.server_learning_rate`", "0.0"),
        ("server_learning_rate = 0.05", 'proximal_mu = "high"', "`federation.proximal_mu`", "'high'"),
        ("server_learning_rate = 0.05", "beta1 = 1.0", "`federation.beta1`", "1.0"),
        ("server_learning_rate = 0.05", "beta2 = -0.5", "`federation.beta2`", "-0.5"),
        ("server_learning_rate = 0.05", 'tau = "1e-3"', "`federation.tau`", "'1e-3'"),
        ("server_learning_rate = 0.05", "tau = nan", "`federation.tau`", "nan"),
        ("server_learning_rate = 0.05", "round_timeout_s = 0", "`federation.round_timeout_s`", "0"),
    ],
)
def test_load_federation_config_names_the_bad_field_and_value(tmp_path, old, new, field, value):
    path = _write(tmp_path / "federation.toml", _replace(FEDERATION_TOML, old, new))

    with pytest.raises(ConfigError) as err:
        load_federation_config(path)

    message = str(err.value)
    assert field in message and value in message, message


def test_load_federation_config_lists_the_allowed_strategies(tmp_path):
    path = _write(tmp_path / "federation.toml", _replace(FEDERATION_TOML, '"fedadam"', '"scaffold"'))

    with pytest.raises(ConfigError) as err:
        load_federation_config(path)

    message = str(err.value)
    assert "`federation.strategy`" in message and "'scaffold'" in message
    assert all(f"'{name}'" in message for name in ("fedavg", "fedprox", "fedadam"))


def test_load_site_config_names_an_unknown_key(tmp_path):
    path = _write(tmp_path / "site.toml", _replace(SITE_TOML, "r = 4", "r = 4\nrank = 8"))

    with pytest.raises(ConfigError, match=r"unknown key\(s\) in `\[lora\]`: rank"):
        load_site_config(path)


def test_load_site_config_names_an_unknown_section(tmp_path):
    path = _write(tmp_path / "site.toml", SITE_TOML + "\n[optimizer]\nname = 'sgd'\n")

    with pytest.raises(ConfigError, match="unknown section.*optimizer"):
        load_site_config(path)


def test_load_site_config_requires_the_privacy_section(tmp_path):
    without_privacy = SITE_TOML.split("[privacy]")[0]

    with pytest.raises(ConfigError, match="missing required key `max_grad_norm`"):
        load_site_config(_write(tmp_path / "site.toml", without_privacy))


def test_load_site_config_names_a_missing_file(tmp_path):
    missing = tmp_path / "nowhere" / "site.toml"

    with pytest.raises(ConfigError, match="config file not found") as err:
        load_site_config(missing)
    assert str(missing) in str(err.value)


def test_load_federation_config_reports_invalid_toml(tmp_path):
    path = _write(tmp_path / "federation.toml", "[federation\nrounds = 3\n")

    with pytest.raises(ConfigError, match="invalid TOML") as err:
        load_federation_config(path)
    assert str(path) in str(err.value)


def test_load_site_config_resolves_relative_paths_against_the_toml_directory(tmp_path, monkeypatch):
    _write(tmp_path / "sites" / "a" / "site.toml", SITE_TOML)
    (tmp_path / "sites" / "models" / "tiny").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)  # the working directory must not matter

    cfg = load_site_config(Path("sites/a/site.toml"))

    root = (tmp_path / "sites" / "a").resolve()
    assert cfg.data_dir == root / "records"
    assert cfg.state_dir == root / "state"
    assert Path(cfg.model_source()) == root / "../models/tiny"
    assert Path(cfg.model_source()).resolve() == (tmp_path / "sites" / "models" / "tiny").resolve()


def test_load_site_config_keeps_absolute_paths_and_hub_ids(tmp_path):
    text = _replace(SITE_TOML, 'dir = "records"', f'dir = "{tmp_path / "elsewhere"}"')
    text = _replace(text, 'base = "../models/tiny"', 'base = "meta-llama/Llama-3.2-1B"')

    cfg = load_site_config(_write(tmp_path / "cfg" / "site.toml", text))

    assert cfg.data_dir == tmp_path / "elsewhere"
    assert cfg.model_source() == "meta-llama/Llama-3.2-1B"


def test_load_federation_config_resolves_the_model_against_the_toml_directory(tmp_path, monkeypatch):
    _write(tmp_path / "coordinator" / "federation.toml", FEDERATION_TOML)
    (tmp_path / "coordinator" / "models" / "tiny").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)

    cfg = load_federation_config(Path("coordinator/federation.toml"))

    assert Path(cfg.model_source()) == (tmp_path / "coordinator" / "models" / "tiny").resolve()


def test_config_hash_is_stable_and_changes_with_a_field(tmp_path):
    first = load_federation_config(_write(tmp_path / "a" / "federation.toml", FEDERATION_TOML))
    moved = load_federation_config(_write(tmp_path / "b" / "federation.toml", FEDERATION_TOML))
    more_rounds = load_federation_config(
        _write(tmp_path / "c" / "federation.toml", _replace(FEDERATION_TOML, "rounds = 5", "rounds = 6"))
    )
    other_rank = load_federation_config(
        _write(tmp_path / "d" / "federation.toml", _replace(FEDERATION_TOML, "r = 4", "r = 8"))
    )

    digest = first.config_hash()
    assert len(digest) == 64 and digest == first.config_hash()
    assert moved.config_hash() == digest  # the directory (root) is not part of the configuration
    assert more_rounds.config_hash() != digest
    assert other_rank.config_hash() != digest
    assert dataclasses.replace(first, federation=dataclasses.replace(first.federation, tau=0.5)).config_hash() != digest


def test_distributed_noise_says_which_training_settings_it_does_not_use(tmp_path):
    # A distributed round is one DP-FedSGD step: the site's epochs (2 here) and a probe phase do not happen.
    cfg = load_site_config(_write(tmp_path / "site.toml", SITE_TOML))
    privacy = dataclasses.replace(cfg.privacy, noise="distributed")
    training = dataclasses.replace(cfg.training, probe_rounds=3)
    with pytest.warns(UserWarning, match=r"not used: epochs = 2, probe_rounds = 3\.$"):
        dataclasses.replace(cfg, privacy=privacy, training=training)


def test_local_noise_and_default_training_settings_do_not_warn(tmp_path, recwarn):
    cfg = load_site_config(_write(tmp_path / "site.toml", SITE_TOML))
    dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, probe_rounds=3))  # local noise: all used
    one_step = dataclasses.replace(cfg.training, epochs=1)
    dataclasses.replace(cfg, privacy=dataclasses.replace(cfg.privacy, noise="distributed"), training=one_step)
    assert [w for w in recwarn if "distributed" in str(w.message)] == []
