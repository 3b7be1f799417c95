"""Site and federation configuration: TOML files loaded into frozen, self-validating dataclasses.

A site TOML has the sections `[site] [data] [task] [model] [lora] [training]` (plus `[privacy]` and
`[scrub]`, owned by their stages); a federation TOML has `[federation] [model] [lora] [task]`, plus
the optional `[security]` (signed, validated updates; robust aggregation), `[central_dp]` and `[secagg]`.
Relative paths in a TOML resolve against the file's own directory, so a config directory can move.
Every check names the field and the value, PEFT style: "`lora.r` must be > 0, got 0."
"""

from __future__ import annotations

import enum
import hashlib
import json
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common.accounting import Accountant, EpsilonConversion
from common.config_table import check_table
from common.errors import ConfigError


class TaskType(enum.StrEnum):
    CAUSAL_LM = "causal_lm"
    CLASSIFICATION = "classification"


class Pooling(enum.StrEnum):
    """How a classifier reads a record's token states (classification only)."""

    MODEL = "model"  # the model's own sequence-classification head (BERT: [CLS] + pooler; Llama: last token)
    MEAN = "mean"  # mean of the token states (padding excluded), L2-normalised: how sentence encoders are trained


class HeadInit(enum.StrEnum):
    """How the new classification head starts (classification only)."""

    RANDOM = "random"  # the model's own initialisation
    ZEROS = "zeros"  # every label equally likely at round 0
    LABEL_NAMES = "label_names"  # each label's row is its encoded name: a zero-shot classifier at round 0


class StrategyName(enum.StrEnum):
    FEDAVG = "fedavg"
    FEDPROX = "fedprox"
    FEDADAM = "fedadam"


class Aggregator(enum.StrEnum):
    """How the sites' adapters are combined before the strategy's server step."""

    MEAN = "mean"  # example-weighted mean (FedAvg)
    TRIMMED_MEAN = "trimmed_mean"  # coordinate-wise, unweighted, `trim_fraction` cut from each end
    MEDIAN = "median"  # coordinate-wise, unweighted


class Precision(enum.StrEnum):
    AUTO = "auto"  # bf16 autocast on a GPU that supports it, fp32 otherwise
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _is_int(value: Any) -> bool:
    """An integer, not a bool: TOML's `true` must not pass as 1."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A real number (int or float), not a bool or a string; NaN fails every comparison after this."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _names(value: Any, name: str) -> tuple[str, ...]:
    """A TOML list of names; a bare string would otherwise be split into its characters."""
    _require(isinstance(value, list | tuple), f"`{name}` must be a list, got {value!r}.")
    return tuple(value)


def _enum(cls: type[enum.StrEnum], value: Any, name: str) -> Any:
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in cls)
        raise ConfigError(f"`{name}` must be one of {allowed}, got {value!r}.") from None


def _build(cls: type, section: str, raw: Any) -> Any:
    """Build dataclass `cls` from the TOML table `raw`, rejecting unknown keys by name."""
    raw = check_table(cls, section, raw)
    try:
        return cls(**raw)
    except TypeError as err:  # a missing required key
        raise ConfigError(f"`[{section}]`: {err}") from None


@dataclass(frozen=True)
class ModelConfig:
    """Base model: a local directory (from `save_pretrained`) or a hub id already in the local cache."""

    base: str = ""
    # Tokens per record after truncation; 128 keeps the demo's notes whole on a 2-core CPU.
    max_length: int = 128

    def __post_init__(self) -> None:
        _require(
            isinstance(self.base, str) and bool(self.base), f"`model.base` must be a path or hub id, got {self.base!r}."
        )
        _require(
            _is_int(self.max_length) and self.max_length > 0,
            f"`model.max_length` must be > 0, got {self.max_length!r}.",
        )


@dataclass(frozen=True)
class LoraSettings:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_modules", _names(self.target_modules, "lora.target_modules"))
        _require(_is_int(self.r) and self.r > 0, f"`lora.r` must be > 0, got {self.r!r}.")
        _require(_is_number(self.alpha) and self.alpha > 0, f"`lora.alpha` must be > 0, got {self.alpha!r}.")
        _require(
            _is_number(self.dropout) and 0 <= self.dropout < 1,
            f"`lora.dropout` must be in [0, 1), got {self.dropout!r}.",
        )
        _require(
            len(self.target_modules) > 0 and all(isinstance(m, str) and m for m in self.target_modules),
            f"`lora.target_modules` must be a non-empty list of module names, got {list(self.target_modules)!r}.",
        )


@dataclass(frozen=True)
class TaskConfig:
    type: TaskType = TaskType.CAUSAL_LM
    # Classification only: the label names, in index order.
    labels: tuple[str, ...] = ()
    # Classification only: how records are pooled and how the head starts (see Pooling, HeadInit).
    pooling: Pooling = Pooling.MODEL
    head_init: HeadInit = HeadInit.RANDOM

    def __post_init__(self) -> None:
        object.__setattr__(self, "type", _enum(TaskType, self.type, "task.type"))
        object.__setattr__(self, "labels", tuple(str(x) for x in _names(self.labels, "task.labels")))
        object.__setattr__(self, "pooling", _enum(Pooling, self.pooling, "task.pooling"))
        object.__setattr__(self, "head_init", _enum(HeadInit, self.head_init, "task.head_init"))
        if self.type is not TaskType.CLASSIFICATION:
            _require(
                self.pooling is Pooling.MODEL and self.head_init is HeadInit.RANDOM,
                "`task.pooling` and `task.head_init` apply to classification only; remove them for causal_lm.",
            )
        if self.type is TaskType.CLASSIFICATION:
            _require(
                len(self.labels) >= 2,
                f"`task.labels` must list >= 2 labels for classification, got {list(self.labels)!r}.",
            )
            _require(len(set(self.labels)) == len(self.labels), f"`task.labels` has duplicates: {list(self.labels)!r}.")


@dataclass(frozen=True)
class DataConfig:
    dir: str = "data"
    text_field: str = "text"
    prompt_field: str = "prompt"
    response_field: str = "response"
    label_field: str = "label"
    # Share of records held out for evaluating the global adapter; never trained on.
    holdout_fraction: float = 0.2
    seed: int = 0
    # The longest record accepted (a JSONL line, a CSV row's fields), in characters: bounds the memory and
    # time one hostile record can take; a longer one is a data error naming its file and line.
    max_record_chars: int = 1_000_000

    def __post_init__(self) -> None:
        _require(
            isinstance(self.dir, str) and bool(self.dir), f"`data.dir` must be a directory path, got {self.dir!r}."
        )
        _require(
            _is_int(self.max_record_chars) and self.max_record_chars > 0,
            f"`data.max_record_chars` must be > 0, got {self.max_record_chars!r}.",
        )
        _require(
            _is_number(self.holdout_fraction) and 0 < self.holdout_fraction < 1,
            f"`data.holdout_fraction` must be in (0, 1), got {self.holdout_fraction!r}.",
        )


@dataclass(frozen=True)
class TrainingConfig:
    # Local passes over the site's training split per round.
    epochs: int = 1
    batch_size: int = 16
    learning_rate: float = 1e-3
    # Stop a round after this many optimiser steps (0 = no cap); bounds a round's time on big sites.
    max_steps: int = 0
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    precision: Precision = Precision.AUTO
    # Torch intra-op threads per site process; 1 lets several sites share a small machine.
    threads: int = 1
    seed: int = 0
    # Dropout probability of every dropout layer of the base model during local training; unset keeps the
    # checkpoint's own; 0 turns it off (suggested for DP by Li et al. 2022, yet 0.5-1.8 points worse on the
    # Banking77 bench: measure on your own hold-out).
    dropout: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "precision", _enum(Precision, self.precision, "training.precision"))
        _require(_is_int(self.epochs) and self.epochs > 0, f"`training.epochs` must be > 0, got {self.epochs!r}.")
        _require(
            _is_int(self.batch_size) and self.batch_size > 0,
            f"`training.batch_size` must be > 0, got {self.batch_size!r}.",
        )
        _require(
            _is_number(self.learning_rate) and self.learning_rate > 0,
            f"`training.learning_rate` must be > 0, got {self.learning_rate!r}.",
        )
        _require(
            _is_int(self.max_steps) and self.max_steps >= 0,
            f"`training.max_steps` must be >= 0, got {self.max_steps!r}.",
        )
        _require(_is_int(self.threads) and self.threads > 0, f"`training.threads` must be > 0, got {self.threads!r}.")
        _require(
            self.dropout is None or (_is_number(self.dropout) and 0 <= self.dropout < 1),
            f"`training.dropout` must be in [0, 1), got {self.dropout!r}.",
        )
        dev = self.device
        _require(
            isinstance(dev, str) and (dev in ("auto", "cpu", "cuda", "mps") or dev.startswith("cuda:")),
            f"`training.device` must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {dev!r}.",
        )


APP_PIN_INSTALLED = "installed"
APP_PIN_SHA256 = "sha256:"


@dataclass(frozen=True)
class SiteSection:
    id: str = ""
    # Where the site keeps its ledger, keys and scrubbed cache (relative to the TOML's directory).
    state_dir: str = "state"
    # The only app this site runs: "installed" (a bundle declaring the Silo installed here) or
    # "sha256:<hex>" (exactly that bundle); any other run is refused before it executes anything.
    app: str = APP_PIN_INSTALLED

    def __post_init__(self) -> None:
        ok = isinstance(self.id, str) and bool(self.id) and all(c.isalnum() or c in "-_." for c in self.id)
        _require(ok, f"`site.id` must be a non-empty name of letters, digits, '-', '_' or '.', got {self.id!r}.")
        pinned = isinstance(self.app, str) and self.app.startswith(APP_PIN_SHA256)
        digest = self.app.removeprefix(APP_PIN_SHA256) if pinned else ""
        ok = self.app == APP_PIN_INSTALLED or (len(digest) == 64 and all(c in "0123456789abcdef" for c in digest))
        _require(ok, f"`site.app` must be 'installed' or 'sha256:' and 64 lowercase hex digits, got {self.app!r}.")


@dataclass(frozen=True)
class SiteConfig:
    site: SiteSection
    data: DataConfig
    task: TaskConfig
    model: ModelConfig
    lora: LoraSettings
    training: TrainingConfig
    # Directory of the TOML file; relative paths resolve against it.
    root: Path = field(default=Path("."), compare=False)
    privacy: Any = None  # common.config_privacy.PrivacyConfig when that stage is present
    scrub: Any = None  # common.config_scrub.ScrubConfig when that stage is present

    def resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.root / p)

    @property
    def data_dir(self) -> Path:
        return self.resolve(self.data.dir)

    @property
    def state_dir(self) -> Path:
        return self.resolve(self.site.state_dir)

    def model_source(self) -> str:
        """A local path when one exists relative to the TOML, else the string as given (a hub id)."""
        local = self.resolve(self.model.base)
        return str(local) if local.exists() else self.model.base


@dataclass(frozen=True)
class FederationSection:
    rounds: int = 3
    min_sites: int = 2
    strategy: StrategyName = StrategyName.FEDAVG
    # FedProx: weight of the proximal term mu/2 * ||w - w_global||^2 at the sites.
    proximal_mu: float = 0.01
    # FedAdam (Reddi et al. 2021): server learning rate, moment decays and adaptivity tau.
    server_learning_rate: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    # Seconds to wait for the sites' replies in one round before going on without the late ones.
    round_timeout_s: float = 600.0
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "strategy", _enum(StrategyName, self.strategy, "federation.strategy"))
        _require(_is_int(self.rounds) and self.rounds > 0, f"`federation.rounds` must be > 0, got {self.rounds!r}.")
        _require(
            _is_int(self.min_sites) and self.min_sites > 0,
            f"`federation.min_sites` must be > 0, got {self.min_sites!r}.",
        )
        _require(
            _is_number(self.proximal_mu) and self.proximal_mu >= 0,
            f"`federation.proximal_mu` must be >= 0, got {self.proximal_mu!r}.",
        )
        _require(
            _is_number(self.server_learning_rate) and self.server_learning_rate > 0,
            f"`federation.server_learning_rate` must be > 0, got {self.server_learning_rate!r}.",
        )
        _require(
            _is_number(self.beta1) and 0 <= self.beta1 < 1, f"`federation.beta1` must be in [0, 1), got {self.beta1!r}."
        )
        _require(
            _is_number(self.beta2) and 0 <= self.beta2 < 1, f"`federation.beta2` must be in [0, 1), got {self.beta2!r}."
        )
        _require(_is_number(self.tau) and self.tau > 0, f"`federation.tau` must be > 0, got {self.tau!r}.")
        _require(
            _is_number(self.round_timeout_s) and self.round_timeout_s > 0,
            f"`federation.round_timeout_s` must be > 0, got {self.round_timeout_s!r}.",
        )


@dataclass(frozen=True)
class SecuritySection:
    """`[security]`: what the coordinator checks before an update may be aggregated.

    With `registry`, each update must carry a valid Ed25519 signature by the key registered for its
    site id. Without one, signatures are still required and checked, but against the key the site sends
    with its update, pinned on first use for the rest of the run: tampering and replays are caught,
    site identity is not (the manifest says "pinned-on-first-use").
    """

    # JSON `{"sites": {"<site_id>": {"signing_public_key": "<PEM>", "fingerprint": "<sha256 hex>"}}}`.
    registry: str = ""
    require_signatures: bool = True
    # Reject an update whose L2 distance from the global adapter, ||w_site - w_global||_2, exceeds
    # this; 0 = the relative bound (server/verify.py `relative_norm_bounds`: 10 x its peers' median).
    max_update_norm: float = 0.0
    # Reject a reply whose arrays and declarations exceed this many bytes (0 = the global adapter's
    # own size plus 1 MiB for the site's declarations).
    max_update_bytes: int = 0
    aggregator: Aggregator = Aggregator.MEAN
    # trimmed_mean: floor(trim_fraction * sites) values cut from each end of every coordinate.
    trim_fraction: float = 0.1

    def __post_init__(self) -> None:
        object.__setattr__(self, "aggregator", _enum(Aggregator, self.aggregator, "security.aggregator"))
        _require(isinstance(self.registry, str), f"`security.registry` must be a path, got {self.registry!r}.")
        _require(
            isinstance(self.require_signatures, bool),
            f"`security.require_signatures` must be true or false, got {self.require_signatures!r}.",
        )
        _require(
            _is_number(self.max_update_norm) and self.max_update_norm >= 0,
            f"`security.max_update_norm` must be >= 0, got {self.max_update_norm!r}.",
        )
        _require(
            _is_int(self.max_update_bytes) and self.max_update_bytes >= 0,
            f"`security.max_update_bytes` must be >= 0, got {self.max_update_bytes!r}.",
        )
        _require(
            _is_number(self.trim_fraction) and 0 <= self.trim_fraction < 0.5,
            f"`security.trim_fraction` must be in [0, 0.5), got {self.trim_fraction!r}.",
        )
        _require(
            self.require_signatures or not self.registry,
            "`security.require_signatures` cannot be false when `security.registry` is set.",
        )


@dataclass(frozen=True)
class CentralDPSection:
    """`[central_dp]`: site-level DP at the coordinator (McMahan et al. 2018, fixed clipping).

    Each site's delta w_k - w is clipped to L2 norm `clip`; the unweighted mean of the clipped deltas
    gets Gaussian noise of std `noise_multiplier * clip / n` (n = sites aggregated). Off by default.
    """

    enabled: bool = False
    noise_multiplier: float = 1.0
    clip: float = 1.0
    delta: float = 1e-5
    accountant: str = "rdp"
    # RDP -> (epsilon, delta) conversion; see common/accounting.py.
    conversion: str = "balle2020"

    def __post_init__(self) -> None:
        _require(isinstance(self.enabled, bool), f"`central_dp.enabled` must be true or false, got {self.enabled!r}.")
        _require(
            _is_number(self.noise_multiplier) and self.noise_multiplier > 0,
            f"`central_dp.noise_multiplier` must be > 0, got {self.noise_multiplier!r}.",
        )
        _require(_is_number(self.clip) and self.clip > 0, f"`central_dp.clip` must be > 0, got {self.clip!r}.")
        _require(
            _is_number(self.delta) and 0 < self.delta < 1, f"`central_dp.delta` must be in (0, 1), got {self.delta!r}."
        )
        object.__setattr__(self, "accountant", _enum(Accountant, self.accountant, "central_dp.accountant"))
        if self.accountant is Accountant.PRV:
            object.__setattr__(self, "conversion", "")
        else:
            object.__setattr__(self, "conversion", _enum(EpsilonConversion, self.conversion, "central_dp.conversion"))


@dataclass(frozen=True)
class SecAggSection:
    """`[secagg]`: secure aggregation (SecAgg+ on the complete graph, common/secagg.py); off by default.

    The coordinator sees only the weighted sum of the sites' updates. Each site clips its delta
    w_k - w to L2 norm `clip` BEFORE masking (the coordinator can no longer check norms), quantises
    every coordinate of [-clip, clip] to `quantization_range` steps, and masks in the integers mod
    `modulus`. Shares of each site's secrets are rebuilt from `reconstruction_threshold` of the sites.
    """

    enabled: bool = False
    # L2 bound on a site's delta w_k - w; the manifest says how many sites had to clip to it.
    clip: float = 1.0
    # Quantisation levels over [-clip, clip]: 2^22 makes one step 2 * clip / 2^22 (4.8e-7 at clip 1).
    quantization_range: int = 1 << 22
    # The masking field, a power of two: 2^62 holds a sum over ~1e12 examples at the default range.
    modulus: int = 1 << 62
    # Shamir threshold as a share of the sites that joined: t = max(2, ceil(fraction * sites)).
    reconstruction_threshold: float = 0.6

    def __post_init__(self) -> None:
        _require(isinstance(self.enabled, bool), f"`secagg.enabled` must be true or false, got {self.enabled!r}.")
        _require(_is_number(self.clip) and self.clip > 0, f"`secagg.clip` must be > 0, got {self.clip!r}.")
        _require(
            _is_int(self.quantization_range) and self.quantization_range >= 2,
            f"`secagg.quantization_range` must be an integer >= 2, got {self.quantization_range!r}.",
        )
        m = self.modulus
        _require(
            _is_int(m) and 2 <= m <= 1 << 62 and not m & (m - 1),
            f"`secagg.modulus` must be a power of two between 2 and 2^62, got {m!r}.",
        )
        _require(
            self.quantization_range < m // 4,
            f"`secagg.quantization_range` must be < modulus / 4, got {self.quantization_range!r} with {m!r}.",
        )
        _require(
            _is_number(self.reconstruction_threshold) and 0.5 < self.reconstruction_threshold <= 1,
            f"`secagg.reconstruction_threshold` must be in (0.5, 1], got {self.reconstruction_threshold!r}.",
        )


@dataclass(frozen=True)
class FederationConfig:
    federation: FederationSection
    model: ModelConfig
    lora: LoraSettings
    task: TaskConfig
    root: Path = field(default=Path("."), compare=False)
    security: SecuritySection = field(default_factory=SecuritySection)
    central_dp: CentralDPSection = field(default_factory=CentralDPSection)
    secagg: SecAggSection = field(default_factory=SecAggSection)

    def __post_init__(self) -> None:
        _require(
            not self.central_dp.enabled or self.security.aggregator is Aggregator.MEAN,
            '`central_dp.enabled` needs `security.aggregator = "mean"` (its noise is calibrated to the mean), '
            f"got {str(self.security.aggregator)!r}.",
        )
        if self.secagg.enabled:
            _require(
                self.security.aggregator is Aggregator.MEAN,
                '`secagg.enabled` needs `security.aggregator = "mean"`: the coordinator sees only the sum, '
                f"got {str(self.security.aggregator)!r}.",
            )
            _require(
                not self.central_dp.enabled,
                "`secagg.enabled` and `central_dp.enabled` cannot both be on yet: central DP clips each site's "
                "update at the coordinator, which SecAgg hides.",
            )
            _require(
                self.federation.min_sites >= 2,
                f"`secagg.enabled` needs `federation.min_sites` >= 2 (a sum of one is that site's update), "
                f"got {self.federation.min_sites!r}.",
            )

    def registry_path(self) -> Path | None:
        """The site key registry, resolved against the TOML's directory; None when not configured."""
        if not self.security.registry:
            return None
        p = Path(self.security.registry).expanduser()
        return p if p.is_absolute() else self.root / p

    def model_source(self) -> str:
        local = Path(self.model.base).expanduser()
        local = local if local.is_absolute() else self.root / local
        return str(local) if local.exists() else self.model.base

    def config_hash(self) -> str:
        """sha256 of the canonical config: a resumed run must have the same one. The round timeout is
        operational (a slow restart may need a longer one), so it is left out."""
        plain = _plain(self)
        plain["federation"].pop("round_timeout_s", None)
        # Sections left at their defaults are left out, so runs started before they existed resume.
        for name, default in (
            ("security", SecuritySection()),
            ("central_dp", CentralDPSection()),
            ("secagg", SecAggSection()),
        ):
            if getattr(self, name) == default:
                plain.pop(name, None)
        body = json.dumps(plain, sort_keys=True, default=str).encode()
        return hashlib.sha256(body).hexdigest()


def _plain(cfg: Any) -> dict[str, Any]:
    out = asdict(cfg)
    out.pop("root", None)
    return out


def _read_toml(path: str | Path) -> tuple[dict[str, Any], Path]:
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh), p.resolve().parent
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{p}: invalid TOML: {err}") from None


def _check_sections(raw: dict[str, Any], allowed: set[str], path: str | Path) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))}).")


def _with_path(path: str | Path, build: Any) -> Any:
    try:
        return build()
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def load_site_config(path: str | Path) -> SiteConfig:
    raw, root = _read_toml(path)
    _check_sections(raw, {"site", "data", "task", "model", "lora", "training", "privacy", "scrub"}, path)

    def build() -> SiteConfig:
        return SiteConfig(
            site=_build(SiteSection, "site", raw.get("site")),
            data=_build(DataConfig, "data", raw.get("data")),
            task=_build(TaskConfig, "task", raw.get("task")),
            model=_build(ModelConfig, "model", raw.get("model")),
            lora=_build(LoraSettings, "lora", raw.get("lora")),
            training=_build(TrainingConfig, "training", raw.get("training")),
            root=root,
            privacy=_load_optional("privacy", raw.get("privacy")),
            scrub=_load_optional("scrub", raw.get("scrub")),
        )

    return _with_path(path, build)


def _load_optional(section: str, raw: Any) -> Any:
    """The `[privacy]` and `[scrub]` sections, validated by their own stage's config class."""
    if section == "privacy":
        try:
            from common.config_privacy import PrivacyConfig
        except ImportError:
            return raw
        return PrivacyConfig.from_mapping(raw or {})
    try:
        from common.config_scrub import ScrubConfig
    except ImportError:
        return raw
    return ScrubConfig.from_mapping(raw or {})


def load_federation_config(path: str | Path) -> FederationConfig:
    raw, root = _read_toml(path)
    _check_sections(raw, {"federation", "model", "lora", "task", "security", "central_dp", "secagg"}, path)
    return _with_path(
        path,
        lambda: FederationConfig(
            federation=_build(FederationSection, "federation", raw.get("federation")),
            model=_build(ModelConfig, "model", raw.get("model")),
            lora=_build(LoraSettings, "lora", raw.get("lora")),
            task=_build(TaskConfig, "task", raw.get("task")),
            root=root,
            security=_build(SecuritySection, "security", raw.get("security")),
            central_dp=_build(CentralDPSection, "central_dp", raw.get("central_dp")),
            secagg=_build(SecAggSection, "secagg", raw.get("secagg")),
        ),
    )
