"""Site and federation configuration: TOML files loaded into frozen, self-validating dataclasses.

A site TOML has the sections `[site] [data] [task] [model] [lora] [training] [privacy] [scrub]`
(site.py, privacy.py, scrub.py); a federation TOML has `[federation] [model] [lora] [task]`, plus the
optional `[security]`, `[central_dp]` and `[secagg]` (federation.py); the sections both share are in
model.py. Every check is one of validate.py's and names the field and the value, PEFT style:
"`lora.r` must be > 0, got 0." Relative paths in a TOML resolve against the file's own directory.
Configs write themselves back as TOML (`to_toml()`, toml.py): build a config, do not template one.
"""

from common.config.federation import (
    Aggregator,
    CentralDPSection,
    FederationConfig,
    FederationSection,
    SecAggSection,
    SecuritySection,
    StrategyName,
    WireEncoding,
    load_federation_config,
)
from common.config.model import HeadInit, LoraSettings, ModelConfig, Pooling, TaskConfig, TaskType
from common.config.privacy import GradSampleMode, PrivacyConfig
from common.config.scrub import ScrubConfig, ScrubOperator, ScrubProfile
from common.config.site import (
    APP_PIN_INSTALLED,
    APP_PIN_SHA256,
    DataConfig,
    Optimizer,
    Precision,
    SiteConfig,
    SiteSection,
    TrainingConfig,
    load_site_config,
)

__all__ = [
    "APP_PIN_INSTALLED",
    "APP_PIN_SHA256",
    "Aggregator",
    "CentralDPSection",
    "DataConfig",
    "FederationConfig",
    "FederationSection",
    "GradSampleMode",
    "HeadInit",
    "LoraSettings",
    "ModelConfig",
    "Optimizer",
    "Pooling",
    "Precision",
    "PrivacyConfig",
    "ScrubConfig",
    "ScrubOperator",
    "ScrubProfile",
    "SecAggSection",
    "SecuritySection",
    "SiteConfig",
    "SiteSection",
    "StrategyName",
    "TaskConfig",
    "TaskType",
    "TrainingConfig",
    "WireEncoding",
    "load_federation_config",
    "load_site_config",
]
