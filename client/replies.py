"""What a site's reply carries besides the adapter: its declaration (common/declaration.py), the seal over
everything sent (common/sealing.py), or, when anything failed, a fixed error reason.

Failures become error replies with a reason code and a fixed message (`error_reply`): an exception's text
can carry record content, so it stays in the site's own log; when any stage fails, signing included,
nothing is sent.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import torch
from flwr.app import ConfigRecord, Error, Message

from client.round_plan import RoundId
from client.site_data import Loaded
from common.adapter import hash_state
from common.config import SiteConfig
from common.declaration import PrivacyDeclaration, ScrubReport, SiteDeclaration
from common.errors import BudgetExhausted, SiloError, UpdateRejected
from common.keys import public_key_raw
from common.sealing import UpdateBinding, seal_update

log = logging.getLogger("silo.site")

# Error-reply codes the coordinator records with the reason (Flower reserves small codes).
ERROR_CODE_BASE = 1000


def seal_round(
    key: Any,
    rid: RoundId,
    site: Loaded,
    sent: dict[str, torch.Tensor],
    metrics: dict[str, Any],
    declarations: ConfigRecord,
) -> None:
    """Add the seal over what is sent (`seal_fields`) to the round's declarations."""
    declarations.update(
        seal_fields(
            key,
            **rid.fields(),
            update_sha256=hash_state(sent),
            global_sha256=site.received_sha256,
            metrics=metrics,
            declarations=declarations,
        )
    )


def seal_fields(key: Any, *, declarations: ConfigRecord, **binding: Any) -> dict[str, bytes]:
    """The signed seal over the update (common/sealing.py), as fields of the reply's "site" record.

    Any failure to sign becomes `UpdateRejected` at the site: the round replies with an error and
    sends no update. The public key travels too, for coordinators without a key registry."""
    try:
        plain = {k: str(v) for k, v in declarations.items()}
        sealed = seal_update(key, UpdateBinding(declarations=plain, **binding))
        public = public_key_raw(key)
    except Exception as err:  # noqa: BLE001 - whatever breaks signing, nothing unsigned may leave
        raise UpdateRejected(f"could not sign the update at the site: {type(err).__name__}: {err}") from None
    return {"seal-payload": sealed.payload, "seal-signature": sealed.signature, "signing-public-key": public}


def declaration_record(
    cfg: SiteConfig, update_sha: str, scrub_report: dict[str, Any], plan: Any, entry: dict[str, Any]
) -> ConfigRecord:
    """What the site declares with its update (common/declaration.py): identity, the update's hash,
    its scrub counts (by entity type only, never a raw value) and the privacy this round spent, as
    its ledger entry for the round says (with the entry's index and the training split's size)."""
    privacy = PrivacyDeclaration(
        dp_enabled=plan.dp_enabled,
        noise_multiplier=plan.noise_multiplier,
        sample_rate=plan.sample_rate,
        steps=plan.steps,
        max_grad_norm=cfg.privacy.max_grad_norm,
        delta=plan.delta,
        accountant=str(plan.accountant),
        conversion=str(plan.conversion) if plan.conversion else None,
        epsilon_round=plan.epsilon_round,
        epsilon_total=plan.epsilon_total_after,
        budget_epsilon=plan.budget_epsilon,
        ledger_entry_sha256=hashlib.sha256(json.dumps(entry, sort_keys=True, default=str).encode()).hexdigest(),
        dataset_size=int(entry["dataset_size"]),
        ledger_index=int(entry["index"]),
        noise_source=entry.get("noise_source"),
        distributed=entry.get("distributed"),
    )
    declaration = SiteDeclaration(
        site_id=cfg.site.id,
        update_sha256=update_sha,
        scrub_report=ScrubReport(
            records_in=scrub_report["records_in"],
            quarantined=scrub_report["quarantined"],
            entities=scrub_report["entities"],
        ),
        privacy=privacy,
    )
    return ConfigRecord(declaration.to_record())


ERROR_REASONS: dict[int, str] = {
    2: "the site's configuration was refused; the site operator sees why in the site's log",
    3: "a record or data file at the site failed validation; the site's log names the file, line and field",
    4: "scrubbing failed at the site; nothing was trained or sent",
    6: "the site's privacy ledger refused the round; the site operator sees why in the site's log",
    7: "the site refused the request or could not seal its update; the site's log says why",
    8: "secure aggregation failed at the site (too few shares, or a malformed protocol message); nothing sent",
}
"""Fixed reasons by exit code: what crosses the wire about a failure, never the exception's own text."""

INTERNAL_ERROR_REASON = "internal error at the site; nothing was trained or sent (see the site's log)"


def error_reply(msg: Message, err: Exception) -> Message:
    """Failures cross the network as error replies with a reason code and a fixed message, never as raw
    exceptions, their text (which can quote a record) or partial updates. The full error goes to the
    site's own log. Only a budget refusal says more: its text is built from ε figures and the site id."""
    if isinstance(err, SiloError):
        code, name = ERROR_CODE_BASE + err.exit_code, type(err).__name__
        fixed = (
            str(err) if isinstance(err, BudgetExhausted) else ERROR_REASONS.get(err.exit_code, INTERNAL_ERROR_REASON)
        )
    else:
        code, name, fixed = ERROR_CODE_BASE + SiloError.exit_code, "SiloError", INTERNAL_ERROR_REASON
    log.error("[silo] %s refused: %s: %s", msg.metadata.message_type, type(err).__name__, err)
    return Message(Error(code=code, reason=f"{name}: {fixed}"), reply_to=msg)
