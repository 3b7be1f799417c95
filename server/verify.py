"""The coordinator's gate: nothing is aggregated unless it is signed by its site and well-formed.

- `load_registry`: the site public keys the coordinator trusts (JSON, see `Registry`).
- `UpdateVerifier.verify`: the site's seal (common/sealing.py) checked against the registered key,
  or, with no registry, against the key the site sent, pinned on first use for the rest of the run.
- `validate_update`: byte size, keys, shapes, dtypes, NaN/Inf and a fixed ||w_site - w_global||_2 bound.
- `relative_norm_bounds`: the default norm bound, relative to the other sites' norms (below).

Each check raises `UpdateRejected` with a reason that the round's manifest entry records.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from common.arrays import Arrays
from common.declaration import SEAL_FIELDS, SEAL_PAYLOAD, SEAL_PUBLIC_KEY, SEAL_SIGNATURE
from common.errors import ConfigError, UpdateRejected
from common.keys import fingerprint, public_key_from_raw
from common.registry import Registry as Registry  # the registry codec, also importable from here
from common.registry import load_registry as load_registry
from common.registry import registry_entry as registry_entry
from common.registry import write_registry as write_registry
from common.sealing import Seal, SealedUpdate, UpdateBinding, metrics_digest, open_sealed, read_seal

# Allowance over the adapter's own bytes for a reply's declarations (scrub and privacy reports, seal).
DECLARATION_ALLOWANCE_BYTES = 1 << 20

IDENTITY_REGISTRY = "registry"
IDENTITY_PINNED = "pinned-on-first-use"
IDENTITY_NONE = "unsigned-accepted"


def site_declarations(site_record: Mapping[str, Any]) -> dict[str, str]:
    """The string fields of the reply's "site" record that the seal covers."""
    return {k: str(v) for k, v in site_record.items() if k not in SEAL_FIELDS}


@dataclass
class UpdateVerifier:
    """Checks seals for one run. `pinned` maps site id -> key fingerprint, seen so far (no registry)."""

    registry: Registry | None
    require_signatures: bool = True
    pinned: dict[str, str] = field(default_factory=dict)

    @property
    def identity(self) -> str:
        """How site identity is established, for the manifest."""
        if self.registry is not None:
            return IDENTITY_REGISTRY
        return IDENTITY_PINNED if self.require_signatures else IDENTITY_NONE

    def verify(
        self,
        site_record: Mapping[str, Any],
        *,
        run_id: str,
        round: int,
        update_sha256: str,
        global_sha256: str,
        metrics: Mapping[str, Any],
    ) -> Seal | None:
        """The opened seal; None only when signatures are not required and the update has none."""
        payload, signature = site_record.get(SEAL_PAYLOAD), site_record.get(SEAL_SIGNATURE)
        if not isinstance(payload, bytes) or not isinstance(signature, bytes):
            if self.require_signatures:
                raise UpdateRejected("unsigned update: no seal in the reply")
            return None
        try:
            metrics_digest(metrics)
        except (TypeError, ValueError):
            raise UpdateRejected("metrics are not all numbers") from None
        claimed = read_seal(payload)
        key = self._key_for(claimed.site_id, site_record)
        binding = UpdateBinding(
            run_id=run_id,
            round=round,
            site_id=str(site_record.get("site-id", "")),
            update_sha256=update_sha256,
            global_sha256=global_sha256,
            metrics=metrics,
            declarations=site_declarations(site_record),
        )
        seal = open_sealed(SealedUpdate(payload, signature), key, binding)
        if self.registry is None:
            self.pinned.setdefault(seal.site_id, seal.key_fingerprint)
        return seal

    def _key_for(self, site_id: str, site_record: Mapping[str, Any]) -> Ed25519PublicKey:
        if self.registry is not None:
            if site_id not in self.registry.keys:
                raise UpdateRejected(f"site {site_id!r} is not in the coordinator's key registry")
            return self.registry.keys[site_id]
        raw = site_record.get(SEAL_PUBLIC_KEY)
        if not isinstance(raw, bytes):
            raise UpdateRejected("signed update without the site's public key (no registry to look it up in)")
        try:
            key = public_key_from_raw(raw)
        except ConfigError as err:
            raise UpdateRejected(f"bad site public key: {err}") from None
        pinned = self.pinned.get(site_id)
        if pinned is not None and pinned != fingerprint(key):
            raise UpdateRejected(
                f"site {site_id!r} signed with key {fingerprint(key)[:12]}, "
                f"but this run pinned {pinned[:12]} on first use"
            )
        return key


def update_norm(arrays: Arrays, global_arrays: Arrays) -> float:
    """||w_site - w_global||_2 over all tensors, in float64."""
    total = 0.0
    for key, w in global_arrays.items():
        d = arrays[key].astype(np.float64) - w.astype(np.float64)
        # Elementwise square-sum, not np.dot: OpenBLAS threads a dot product of this size, and its pool
        # fights torch's in the coordinator process (7.7 ms vs 0.13 ms a call, bench/security_overhead.py).
        total += float(np.square(d).sum())
    return math.sqrt(total)


def payload_limit(global_arrays: Arrays, max_update_bytes: int) -> int:
    return max_update_bytes or sum(a.nbytes for a in global_arrays.values()) + DECLARATION_ALLOWANCE_BYTES


def check_payload_size(payload_bytes: int, global_arrays: Arrays, *, max_update_bytes: int = 0) -> None:
    limit = payload_limit(global_arrays, max_update_bytes)
    if payload_bytes > limit:
        raise UpdateRejected(f"oversized update: {payload_bytes} bytes, limit {limit}")


def validate_update(arrays: Arrays, global_arrays: Arrays, *, max_update_norm: float = 0.0) -> float:
    """Reject anything but a finite adapter of the global adapter's exact form within the norm bound;
    returns the update's norm ||w_site - w_global||_2."""
    missing, extra = sorted(set(global_arrays) - set(arrays)), sorted(set(arrays) - set(global_arrays))
    if missing or extra:
        raise UpdateRejected(f"unexpected adapter keys: missing {missing[:3]}, unexpected {extra[:3]}")
    for key, w in global_arrays.items():
        a = arrays[key]
        if a.shape != w.shape:
            raise UpdateRejected(f"tensor {key} has shape {a.shape}, expected {w.shape}")
        if a.dtype != w.dtype:
            raise UpdateRejected(f"tensor {key} has dtype {a.dtype}, expected {w.dtype}")
        if not np.isfinite(a).all():
            raise UpdateRejected(f"tensor {key} has NaN or Inf values")
    norm = update_norm(arrays, global_arrays)
    if max_update_norm and norm > max_update_norm:
        raise UpdateRejected(f"update norm {norm:.4g} exceeds `security.max_update_norm` {max_update_norm:g}")
    return norm


# The default norm bound (`security.max_update_norm = 0`): an update may be at most this many times the
# median norm of its peers. Honest sites of one federation train the same adapter with the same kind of
# DP-SGD, so their norms differ by the spread of their step counts (a few x); a scaled or runaway update
# is orders of magnitude off. Federations of very unequal sites set an explicit `max_update_norm`.
NORM_BOUND_MULTIPLE = 10.0


def relative_norm_bounds(
    norms: Mapping[Any, float], *, previous: Sequence[float] = (), multiple: float = NORM_BOUND_MULTIPLE
) -> dict[Any, float | None]:
    """Each update's bound: `multiple` x the upper median of the OTHER updates' norms this round plus
    the norms accepted in the previous round. Leaving the update itself out means a scaled update
    cannot raise its own bound; the upper median means a minority of hostile peers cannot lower an
    honest site's bound below an honest norm; last round's norms keep a lone hostile peer (two sites)
    from setting the bound alone after round 1. None: no reference at all (a single update in round 1).
    A reference of 0 (peers that did not move) gives no bound rather than rejecting every real update."""
    out: dict[Any, float | None] = {}
    for key in norms:
        pool = sorted([n for k, n in norms.items() if k != key] + list(previous))
        reference = pool[len(pool) // 2] if pool else 0.0
        out[key] = multiple * reference if reference > 0 else None
    return out
