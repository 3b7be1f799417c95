"""The site's answer to the coordinator's round-0 handshake.

The site's executor has already checked the coordinator's signed run request (client/runtime/
site_runtime.py); the site answers with its own signature over the request's digest, sealed exactly
as an update is (common/sealing.py, round 0). The coordinator verifies that seal against its key
registry before anyone trains: a stale registry, which would get every update of the run rejected
after the sites had spent their budget, fails here instead, with nothing trained or spent.
"""

from __future__ import annotations

from flwr.app import ConfigRecord, Context, Message, RecordDict

from client.site import error_reply, seal_fields, site_config, site_signing_key
from common.errors import SiloError
from common.run_request import RECORD, read_run_request

# The round a handshake seal binds: training rounds start at 1.
HANDSHAKE_ROUND = 0
# What the handshake declares, under the seal.
ACCEPTED = "accepted"


def handle_handshake(msg: Message, context: Context) -> Message:
    try:
        request, _ = read_run_request(msg.content.config_records.get(RECORD))
        cfg = site_config(context)
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
    except SiloError as err:
        return error_reply(msg, err)
    return Message(content=RecordDict({"site": declarations}), reply_to=msg)
