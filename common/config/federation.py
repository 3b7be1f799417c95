"""The federation's TOML: `[federation] [model] [lora] [task]` and the optional `[security]` (signed,
validated updates; robust aggregation), `[central_dp]` and `[secagg]`, loaded into `FederationConfig`."""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common.accounting import Accountant, EpsilonConversion
from common.config.model import LoraSettings, ModelConfig, TaskConfig
from common.config.toml import check_sections, read_toml, sections_toml, with_path
from common.config.validate import (
    above_zero,
    build,
    enum_value,
    flag,
    fraction,
    is_int,
    is_number,
    probability,
    require,
    zero_or_more,
)


class StrategyName(enum.StrEnum):
    FEDAVG = "fedavg"
    FEDPROX = "fedprox"
    FEDADAM = "fedadam"


class Aggregator(enum.StrEnum):
    """How the sites' adapters are combined before the strategy's server step."""

    MEAN = "mean"  # example-weighted mean (FedAvg)
    TRIMMED_MEAN = "trimmed_mean"  # coordinate-wise, unweighted, `trim_fraction` cut from each end
    MEDIAN = "median"  # coordinate-wise, unweighted


class WireEncoding(enum.StrEnum):
    """How the adapter crosses the wire: the site's update as a delta from the global adapter it received,
    in fp32, fp16 or int8 with one fp32 scale per tensor; the global adapter goes down in fp16 unless fp32.
    Applied after the DP noise: post-processing, no privacy cost."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"


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
    # The adapter on the wire (WireEncoding): fp16 halves the bytes at no privacy cost; int8 quarters them.
    wire_encoding: WireEncoding = WireEncoding.FP16
    # Seconds between the coordinator's polls for replies (Flower's own round loop sleeps 3 s).
    reply_poll_s: float = 0.05

    def __post_init__(self) -> None:
        object.__setattr__(self, "strategy", enum_value(StrategyName, self.strategy, "federation.strategy"))
        object.__setattr__(
            self, "wire_encoding", enum_value(WireEncoding, self.wire_encoding, "federation.wire_encoding")
        )
        require(
            is_number(self.reply_poll_s) and 0.001 <= self.reply_poll_s <= 10,
            f"`federation.reply_poll_s` must be between 0.001 and 10 seconds, got {self.reply_poll_s!r}.",
        )
        above_zero("federation.rounds", self.rounds, integer=True)
        above_zero("federation.min_sites", self.min_sites, integer=True)
        zero_or_more("federation.proximal_mu", self.proximal_mu)
        above_zero("federation.server_learning_rate", self.server_learning_rate)
        fraction("federation.beta1", self.beta1)
        fraction("federation.beta2", self.beta2)
        above_zero("federation.tau", self.tau)
        above_zero("federation.round_timeout_s", self.round_timeout_s)


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
        object.__setattr__(self, "aggregator", enum_value(Aggregator, self.aggregator, "security.aggregator"))
        require(isinstance(self.registry, str), f"`security.registry` must be a path, got {self.registry!r}.")
        flag("security.require_signatures", self.require_signatures)
        zero_or_more("security.max_update_norm", self.max_update_norm)
        zero_or_more("security.max_update_bytes", self.max_update_bytes, integer=True)
        require(
            is_number(self.trim_fraction) and 0 <= self.trim_fraction < 0.5,
            f"`security.trim_fraction` must be in [0, 0.5), got {self.trim_fraction!r}.",
        )
        require(
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
        flag("central_dp.enabled", self.enabled)
        above_zero("central_dp.noise_multiplier", self.noise_multiplier)
        above_zero("central_dp.clip", self.clip)
        probability("central_dp.delta", self.delta)
        object.__setattr__(self, "accountant", enum_value(Accountant, self.accountant, "central_dp.accountant"))
        if self.accountant is Accountant.PRV:
            object.__setattr__(self, "conversion", "")
        else:
            object.__setattr__(
                self, "conversion", enum_value(EpsilonConversion, self.conversion, "central_dp.conversion")
            )


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
        flag("secagg.enabled", self.enabled)
        above_zero("secagg.clip", self.clip)
        require(
            is_int(self.quantization_range) and self.quantization_range >= 2,
            f"`secagg.quantization_range` must be an integer >= 2, got {self.quantization_range!r}.",
        )
        m = self.modulus
        require(
            is_int(m) and 2 <= m <= 1 << 62 and not m & (m - 1),
            f"`secagg.modulus` must be a power of two between 2 and 2^62, got {m!r}.",
        )
        require(
            self.quantization_range < m // 4,
            f"`secagg.quantization_range` must be < modulus / 4, got {self.quantization_range!r} with {m!r}.",
        )
        require(
            is_number(self.reconstruction_threshold) and 0.5 < self.reconstruction_threshold <= 1,
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
        require(
            not self.central_dp.enabled or self.security.aggregator is Aggregator.MEAN,
            '`central_dp.enabled` needs `security.aggregator = "mean"` (its noise is calibrated to the mean), '
            f"got {str(self.security.aggregator)!r}.",
        )
        if self.secagg.enabled:
            require(
                self.security.aggregator is Aggregator.MEAN,
                '`secagg.enabled` needs `security.aggregator = "mean"`: the coordinator sees only the sum, '
                f"got {str(self.security.aggregator)!r}.",
            )
            require(
                not self.central_dp.enabled,
                "`secagg.enabled` and `central_dp.enabled` cannot both be on yet: central DP clips each site's "
                "update at the coordinator, which SecAgg hides.",
            )
            require(
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

    def to_toml(self, *, defaults: bool = False) -> str:
        """This config as a federation TOML (fields at their defaults left out unless `defaults`; optional
        sections at their defaults always left out: the config hash ignores them too)."""
        optional = [(n, getattr(self, n)) for n in ("security", "central_dp", "secagg")]
        return sections_toml(
            [("federation", self.federation), ("model", self.model), ("lora", self.lora), ("task", self.task)]
            + [(name, s) for name, s in optional if s != type(s)()],
            defaults=defaults,
        )


FEDERATION_SECTIONS = ("federation", "model", "lora", "task", "security", "central_dp", "secagg")


def _plain(cfg: Any) -> dict[str, Any]:
    out = asdict(cfg)
    out.pop("root", None)
    return out


def load_federation_config(path: str | Path) -> FederationConfig:
    raw, root = read_toml(path)
    check_sections(raw, FEDERATION_SECTIONS, path)
    return with_path(
        path,
        lambda: FederationConfig(
            federation=build(FederationSection, "federation", raw.get("federation")),
            model=build(ModelConfig, "model", raw.get("model")),
            lora=build(LoraSettings, "lora", raw.get("lora")),
            task=build(TaskConfig, "task", raw.get("task")),
            root=root,
            security=build(SecuritySection, "security", raw.get("security")),
            central_dp=build(CentralDPSection, "central_dp", raw.get("central_dp")),
            secagg=build(SecAggSection, "secagg", raw.get("secagg")),
        ),
    )
