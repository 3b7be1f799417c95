"""The site's answer to the coordinator's round-0 handshake.

The site's executor has already checked the coordinator's signed run request (client/runtime/
site_runtime.py); the site answers with its own signature over the request's digest, sealed exactly
as an update is (common/sealing.py, round 0). The coordinator verifies that seal against its key
registry before anyone trains: a stale registry, which would get every update of the run rejected
after the sites had spent their budget, fails here instead, with nothing trained or spent.

The site also checks that its own base model (`[model] base`) is the one the coordinator started
from: the request carries the coordinator's fingerprint of it (common/model_pin.py). A site on
another model would train an adapter that means nothing on the global one, and spend budget doing
it; it refuses the run here instead, with nothing trained, spent or written to its ledger.
"""

from __future__ import annotations

import logging

from flwr.app import ConfigRecord, Context, Error, Message, RecordDict

from client.replies import ERROR_CODE_BASE, error_reply, seal_fields
from client.site_data import site_config
from client.site_state import site_signing_key
from common.config import SiteConfig
from common.errors import RunRefused, SiloError
from common.model_pin import model_fingerprint
from common.run_request import RECORD, RunRequest, read_run_request

# The round a handshake seal binds: training rounds start at 1.
HANDSHAKE_ROUND = 0
# What the handshake declares, under the seal.
ACCEPTED = "accepted"

log = logging.getLogger("silo.site")


class BaseModelMismatch(RunRefused):
    """The site's base model is not the coordinator's. Its message holds two fingerprints and nothing
    of the site's data, so it crosses the wire in full: the coordinator's operator needs the reason."""


def handle_handshake(msg: Message, context: Context) -> Message:
    try:
        request, _ = read_run_request(msg.content.config_records.get(RECORD))
        cfg = site_config(context)
        check_base_model(request, cfg)
        declarations = ConfigRecord({"site-id": cfg.site.id, "handshake": ACCEPTED})
        declarations.update(
            seal_fields(
                site_signing_key(cfg),
                run_id=request.run_id,
                round=HANDSHAKE_ROUND,
                site_id=cfg.site.id,
                update_sha256=request.digest(),
                global_sha256=request.digest(),
                metrics={},
                declarations=declarations,
            )
        )
    except BaseModelMismatch as err:
        log.error("[silo] run refused in the round-0 handshake: %s", err)
        return Message(Error(code=ERROR_CODE_BASE + err.exit_code, reason=f"RunRefused: {err}"), reply_to=msg)
    except SiloError as err:
        return error_reply(msg, err)
    return Message(content=RecordDict({"site": declarations}), reply_to=msg)


def check_base_model(request: RunRequest, cfg: SiteConfig) -> None:
    """RunRefused when this site's base model is not the one the coordinator pinned in its request."""
    pinned = request.base_model_sha256
    if pinned is None:  # a coordinator that predates the pin: nothing to compare
        return
    own = model_fingerprint(cfg.model_source())
    if own != pinned:
        raise BaseModelMismatch(
            f"base model mismatch: this site's [model] base is sha256 {own[:16]}, the coordinator's run is on "
            f"{pinned[:16]}; nothing was trained or spent (give the site the coordinator's base model)"
        )
