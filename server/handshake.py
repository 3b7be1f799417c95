"""The coordinator's side of a site's agreement to a run: the signed run request and the round-0 handshake.

Once per Flower run, before anyone trains:
1. the run request (common/run_request.py) is signed with the coordinator's key, which `silo keys`
   writes beside the registry the federation TOML names (`coordinator_signing.key`); it pins the
   base model's fingerprint (common/model_pin.py), which each site checks against its own;
2. every connected site is sent it in a handshake query and answers with its own seal over the
   request's digest (client/handshake.py); the seal is checked with the run's `UpdateVerifier`,
   exactly as an update will be. A site whose answer fails (a stale registry, a site that refuses the
   run) is left out of the run's rounds, listed with its reason in each round's `rejected`, and has
   trained nothing; fewer than `min_sites` agreeing sites fail the run here, with nothing spent;
3. from then on every message the round loop sends carries the signed request (`AgreedGrid`), so each
   site can check, before it trains or evaluates, that its coordinator asked for exactly this.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from logging import INFO, WARNING
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from common.config import FederationConfig
from common.errors import FederationFailed, UpdateRejected
from common.keys import load_private_key
from common.manifest import Rejection
from common.model_pin import model_fingerprint
from common.pki import COORDINATOR_SIGNING_KEY
from common.run_request import HANDSHAKE_MESSAGE_TYPE, RECORD, SignedRunRequest, make_run_request
from server.exchange import NODE_UNAVAILABLE, RETRY_PAUSE_S
from server.grid_wrapper import GridWrapper
from server.verify import UpdateVerifier


def coordinator_signing_key(cfg: FederationConfig) -> Ed25519PrivateKey | None:
    """The key beside the federation's registry, or None (no registry, or a key directory that predates it)."""
    registry = cfg.registry_path()
    if registry is None:
        return None
    path = registry.parent / COORDINATOR_SIGNING_KEY
    return load_private_key(path) if path.is_file() else None


def sign_run_request(grid: Grid, cfg: FederationConfig, run_id: str, verifier: UpdateVerifier) -> SignedRunRequest:
    key = coordinator_signing_key(cfg)
    if key is None:
        log(
            WARNING,
            "[silo] no %s beside the registry: the run request goes unsigned, and sites holding their "
            "coordinator's key will refuse the run",
            COORDINATOR_SIGNING_KEY,
        )
    return make_run_request(
        key,
        run_id=run_id,
        config_hash=cfg.config_hash(),
        app_sha256=grid.run.fab_hash,
        rounds=cfg.federation.rounds,
        sites=sorted(verifier.registry.keys) if verifier.registry is not None else None,
        base_model_sha256=model_fingerprint(cfg.model_source()),
    )


class AgreedGrid(GridWrapper):
    """The run's Grid, with the signed run request added to every message it sends, and the sites
    that did not agree to the run left out of `get_node_ids`."""

    def __init__(self, grid: Grid, signed: SignedRunRequest, refused: Iterable[Rejection] = ()) -> None:
        super().__init__(grid)
        self.signed = signed
        self.refused = list(refused)
        self._left_out = {r.node_id for r in self.refused}

    def _with_request(self, messages: Iterable[Message]) -> list[Message]:
        out = list(messages)
        for msg in out:
            if msg.has_content():
                msg.content[RECORD] = ConfigRecord(self.signed.record())
        return out

    def get_node_ids(self) -> Iterable[int]:
        return [n for n in self.grid.get_node_ids() if n not in self._left_out]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.grid.push_messages(self._with_request(messages))

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.grid.send_and_receive(self._with_request(messages), timeout=timeout)


@dataclass
class Handshake:
    agreed: dict[int, str] = field(default_factory=dict)  # node id -> site id
    refused: list[Rejection] = field(default_factory=list)


def _answer(msg: Message, signed: SignedRunRequest, verifier: UpdateVerifier) -> str:
    """The site id that agreed, or UpdateRejected with why its answer does not count."""
    if msg.has_error():
        raise UpdateRejected(msg.error.reason or f"error code {msg.error.code}")
    if "site" not in msg.content:
        raise UpdateRejected(f"malformed handshake reply (records: {sorted(msg.content.keys())})")
    site = msg.content.config_records["site"]
    digest = signed.request.digest()
    verifier.verify(site, run_id=signed.request.run_id, round=0, update_sha256=digest, global_sha256=digest, metrics={})
    return str(site.get("site-id", ""))


def handshake(
    grid: Grid, nodes: list[int], signed: SignedRunRequest, verifier: UpdateVerifier, *, min_sites: int, timeout: float
) -> Handshake:
    """Ask every node to agree to the run; sites merely unreachable are asked again until `timeout`."""
    deadline = time.monotonic() + timeout
    out = Handshake()
    pending = list(nodes)
    while True:
        messages = [
            Message(
                content=RecordDict({RECORD: ConfigRecord(signed.record())}),
                dst_node_id=n,
                message_type=HANDSHAKE_MESSAGE_TYPE,
                group_id="0",
            )
            for n in pending
        ]
        unavailable = []
        for msg in grid.send_and_receive(messages, timeout=max(deadline - time.monotonic(), 1.0)):
            node = msg.metadata.src_node_id
            try:
                out.agreed[node] = _answer(msg, signed, verifier)
            except UpdateRejected as err:
                if NODE_UNAVAILABLE in str(err):
                    unavailable.append(node)
                    continue
                site: Any = msg.content.get("site", {}) if msg.has_content() else {}
                out.refused.append(
                    Rejection(node_id=node, reason=str(err), site_id=str(site.get("site-id", "")) or None)
                )
        if len(out.agreed) >= min_sites or not unavailable or time.monotonic() + RETRY_PAUSE_S > deadline:
            return out
        time.sleep(RETRY_PAUSE_S)
        pending = unavailable


def agree_on_run(
    grid: Grid, cfg: FederationConfig, run_id: str, verifier: UpdateVerifier, nodes: list[int]
) -> AgreedGrid:
    """Round 0: sign the run request and shake hands with every site; FederationFailed when fewer
    than `min_sites` agree. The returned grid sends the request with every message."""
    signed = sign_run_request(grid, cfg, run_id, verifier)
    fed = cfg.federation
    result = handshake(grid, nodes, signed, verifier, min_sites=fed.min_sites, timeout=fed.round_timeout_s)
    for r in result.refused:
        log(WARNING, "[silo] round 0: site %s (node %s) did not agree to the run: %s", r.site_id, r.node_id, r.reason)
    if len(result.agreed) < fed.min_sites:
        reasons = "; ".join(f"node {r.node_id}: {r.reason}" for r in result.refused) or "no replies in time"
        raise FederationFailed(
            f"round 0 handshake: {len(result.agreed)} site(s) agreed to run {run_id}, `min_sites` is "
            f"{fed.min_sites}; nobody trained ({reasons})"
        )
    log(
        INFO,
        "[silo] round 0: %d site(s) agreed to run %s (app %s, base model %s, request %s)",
        len(result.agreed),
        run_id,
        signed.request.app_sha256[:12],
        (signed.request.base_model_sha256 or "unpinned")[:12],
        "signed" if signed.signature is not None else "UNSIGNED",
    )
    return AgreedGrid(grid, signed, result.refused)
