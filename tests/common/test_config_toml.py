"""Configs write themselves as TOML: what `to_toml()` writes loads back as the same config."""

import math
import tomllib
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.accounting import Accountant, BudgetFigure, EpsilonConversion, NoiseModel
from common.config import (
    APP_PIN_INSTALLED,
    APP_PIN_SHA256,
    Aggregator,
    CentralDPSection,
    DataConfig,
    FederationConfig,
    FederationSection,
    GradSampleMode,
    HeadInit,
    LoraSettings,
    ModelConfig,
    Optimizer,
    Pooling,
    Precision,
    PrivacyConfig,
    ScrubConfig,
    ScrubOperator,
    ScrubProfile,
    SecAggSection,
    SecuritySection,
    SiteConfig,
    SiteSection,
    StrategyName,
    TaskConfig,
    TaskType,
    TrainingConfig,
    WireEncoding,
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


# ---- the round trip as a property: any valid config, any text in it ------------------------------------------

# Any text a UTF-8 TOML file can hold: control characters, quotes, backslashes, characters beyond U+FFFF.
TEXT = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)
NAMES = st.lists(TEXT, min_size=1, max_size=4, unique=True).map(tuple)
UNIT = st.floats(min_value=0, max_value=1, exclude_max=True)  # [0, 1)
OPEN_UNIT = st.floats(min_value=0, max_value=1, exclude_min=True, exclude_max=True)  # (0, 1)
POSITIVE = st.floats(min_value=1e-6, max_value=1e6) | st.integers(min_value=1, max_value=10**6)
COUNT = st.integers(min_value=1, max_value=10**6)
SEED = st.integers(min_value=-(2**63), max_value=2**63 - 1)  # TOML integers are 64-bit

TASKS = st.just(TaskConfig()) | st.builds(
    TaskConfig,
    type=st.just(TaskType.CLASSIFICATION),
    labels=st.lists(TEXT, min_size=2, max_size=5, unique=True).map(tuple),
    pooling=st.sampled_from(Pooling),
    head_init=st.sampled_from(HeadInit),
)
MODELS = st.builds(ModelConfig, base=TEXT, max_length=COUNT)
LORAS = st.builds(LoraSettings, r=COUNT, alpha=POSITIVE, dropout=UNIT, target_modules=NAMES, ffa=st.booleans())


@st.composite
def privacy_configs(draw: st.DrawFn) -> PrivacyConfig:
    budget_delta = draw(OPEN_UNIT)
    common = {
        "max_grad_norm": draw(POSITIVE),
        "budget_delta": budget_delta,
        "eval_noise_multiplier": draw(POSITIVE),
        "eval_loss_clip": draw(POSITIVE),
        "poisson_sampling": draw(st.booleans()),
        "distributed_budget": draw(st.sampled_from(BudgetFigure)),
        "distributed_min_honest": draw(COUNT),
    }
    if not draw(st.booleans()):
        with warnings.catch_warnings():  # DP off warns: for a site's log, not here
            warnings.simplefilter("ignore", UserWarning)
            return PrivacyConfig(enabled=False, budget_epsilon=math.inf, **common)
    accountant = draw(st.sampled_from(Accountant))
    noise = draw(st.sampled_from(NoiseModel)) if accountant is Accountant.RDP else NoiseModel.LOCAL
    budget_epsilon = draw(POSITIVE | st.just(math.inf))
    if draw(st.booleans()):
        plan = {"noise_multiplier": draw(POSITIVE)}
    else:
        plan = {
            "target_epsilon": draw(st.floats(min_value=1e-6, max_value=min(budget_epsilon, 1e6))),
            "target_delta": draw(st.floats(min_value=0, max_value=budget_delta, exclude_min=True)),
            "planned_rounds": draw(COUNT),
        }
    with warnings.catch_warnings():  # so does poisson_sampling = false
        warnings.simplefilter("ignore", UserWarning)
        return PrivacyConfig(
            budget_epsilon=budget_epsilon,
            accountant=accountant,
            noise=noise,
            grad_sample_mode=draw(st.sampled_from(GradSampleMode)),
            **plan,
            **common,
        )


@st.composite
def scrub_configs(draw: st.DrawFn) -> ScrubConfig:
    operator = draw(st.sampled_from(ScrubOperator))
    key_file = TEXT if operator is ScrubOperator.PSEUDONYM else st.none() | TEXT
    return ScrubConfig(
        operator=operator,
        profile=draw(st.sampled_from(ScrubProfile)),
        fields=draw(NAMES),
        pseudonym_key_file=draw(key_file),
        ner_model=draw(st.none() | TEXT),
        score_threshold=draw(st.floats(min_value=0, max_value=1)),
        second_pass=draw(st.booleans()),
    )


SITE_IDS = st.text("abcXYZ019-_.", min_size=1, max_size=12)
APPS = st.just(APP_PIN_INSTALLED) | st.text("0123456789abcdef", min_size=64, max_size=64).map(
    lambda digest: APP_PIN_SHA256 + digest
)
DEVICES = st.sampled_from(["auto", "cpu", "cuda", "mps"]) | st.integers(0, 7).map(lambda n: f"cuda:{n}")
SITE_CONFIGS = st.builds(
    SiteConfig,
    site=st.builds(SiteSection, id=SITE_IDS, state_dir=TEXT, app=APPS, warm_runtime=st.booleans()),
    data=st.builds(
        DataConfig,
        dir=TEXT,
        text_field=TEXT,
        prompt_field=TEXT,
        response_field=TEXT,
        label_field=TEXT,
        holdout_fraction=OPEN_UNIT,
        seed=SEED,
        max_record_chars=COUNT,
    ),
    task=TASKS,
    model=MODELS,
    lora=LORAS,
    training=st.builds(
        TrainingConfig,
        epochs=COUNT,
        batch_size=COUNT,
        physical_batch_size=st.integers(min_value=0, max_value=10**6),
        probe_rounds=st.integers(min_value=0, max_value=100),
        prefix_cache=st.booleans(),
        learning_rate=POSITIVE,
        optimizer=st.sampled_from(Optimizer),
        max_steps=st.integers(min_value=0, max_value=10**6),
        device=DEVICES,
        precision=st.sampled_from(Precision),
        threads=COUNT,
        seed=SEED,
        dropout=st.none() | UNIT,
    ),
    privacy=privacy_configs(),
    scrub=scrub_configs(),
)


@st.composite
def federation_configs(draw: st.DrawFn) -> FederationConfig:
    aggregator = draw(st.sampled_from(Aggregator))
    mean = aggregator is Aggregator.MEAN
    central_dp = draw(st.booleans()) and mean
    secagg = draw(st.booleans()) and mean and not central_dp
    accountant = draw(st.sampled_from(Accountant))
    return FederationConfig(
        federation=draw(
            st.builds(
                FederationSection,
                rounds=COUNT,
                min_sites=st.integers(min_value=2, max_value=1000),
                strategy=st.sampled_from(StrategyName),
                proximal_mu=st.floats(min_value=0, max_value=10),
                server_learning_rate=POSITIVE,
                beta1=UNIT,
                beta2=UNIT,
                tau=POSITIVE,
                round_timeout_s=POSITIVE,
                seed=SEED,
                wire_encoding=st.sampled_from(WireEncoding),
                reply_poll_s=st.floats(min_value=0.001, max_value=10),
            )
        ),
        model=draw(MODELS),
        lora=draw(LORAS),
        task=draw(TASKS),
        security=SecuritySection(
            registry=draw(st.just("") | TEXT),
            max_update_norm=draw(st.floats(min_value=0, max_value=1e6)),
            max_update_bytes=draw(st.integers(min_value=0, max_value=2**40)),
            aggregator=aggregator,
            trim_fraction=draw(st.floats(min_value=0, max_value=0.5, exclude_max=True)),
        ),
        central_dp=CentralDPSection(
            enabled=central_dp,
            noise_multiplier=draw(POSITIVE),
            clip=draw(POSITIVE),
            delta=draw(OPEN_UNIT),
            accountant=accountant,
            conversion=draw(st.sampled_from(EpsilonConversion)),
        ),
        secagg=SecAggSection(
            enabled=secagg,
            clip=draw(POSITIVE),
            quantization_range=draw(st.integers(min_value=2, max_value=2**20)),
            modulus=1 << draw(st.integers(min_value=23, max_value=62)),
            reconstruction_threshold=draw(st.floats(min_value=0.5, max_value=1, exclude_min=True)),
        ),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=SITE_CONFIGS, defaults=st.booleans())
def test_site_config_to_toml_round_trips_any_valid_config(tmp_path_factory, cfg, defaults):
    path = tmp_path_factory.mktemp("site") / "site.toml"
    path.write_text(cfg.to_toml(defaults=defaults), encoding="ascii")  # every character outside ASCII is escaped
    with warnings.catch_warnings():  # DP off and poisson_sampling off warn when loaded, as they should
        warnings.simplefilter("ignore", UserWarning)
        assert load_site_config(path) == cfg


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=federation_configs(), defaults=st.booleans())
def test_federation_config_to_toml_round_trips_any_valid_config(tmp_path_factory, cfg, defaults):
    path = tmp_path_factory.mktemp("federation") / "federation.toml"
    path.write_text(cfg.to_toml(defaults=defaults), encoding="ascii")
    loaded = load_federation_config(path)
    assert loaded == cfg and loaded.config_hash() == cfg.config_hash()


def test_to_toml_writes_characters_beyond_the_basic_plane_as_toml_escapes(tmp_path):
    model = ModelConfig(base='models/\U0001f600 \u00e9\x7f"\\')  # JSON would write the emoji as a surrogate pair
    cfg = FederationConfig(federation=FederationSection(), model=model, lora=LoraSettings(), task=TaskConfig())
    path = tmp_path / "federation.toml"
    path.write_text(cfg.to_toml())
    assert 'base = "models/\\U0001f600 \\u00e9\\u007f\\"\\\\"' in path.read_text()
    assert load_federation_config(path) == cfg
