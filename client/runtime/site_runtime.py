"""`SiteRuntime`: what a site's long-lived executor does with each message its SuperNode receives.

Before any of a message's work is done, in this order:
1. the run's app bundle (FAB) must be the one this site approved (`[site] app`, app_pin.py);
2. every message must carry the coordinator's signed run request (common/run_request.py), for
   this app and this site, and a train or evaluate message for its run and round.
Only then is the message handed to the site's INSTALLED ClientApp (client/app.py), never to code
from the bundle. A refusal is one log line here and an error reply to the coordinator: nothing is
executed, trained or spent. One object for the node's life: issue 15's warm model and data belong here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from flwr.app import Context, Error, Message, MessageType

from client.answer_later import LATER
from client.runtime.app_pin import AppIdentity, AppPin, identify
from client.runtime.flower_io import TaskInput
from common.config import SiteConfig, load_site_config
from common.errors import RunRefused, SiloError
from common.keys import fingerprint, load_public_key
from common.run_request import HANDSHAKE_MESSAGE_TYPE, RECORD, RunRequest, check_run_request, verify_run_request

log = logging.getLogger("silo.site")
# Error-reply code of a failure that is not a SiloError (its type is sent, never its message,
# which could quote a record); the site's log keeps the traceback.
UNEXPECTED_ERROR_CODE = 1001


@dataclass
class Outcome:
    """The reply to push, the context to keep (secure aggregation state lives there), and the task's status."""

    reply: Message
    context: Context
    ok: bool
    details: str = ""


def _error(msg: Message, code: int, reason: str) -> Message:
    return Message(Error(code=code, reason=reason), reply_to=msg)


def refusal_reply(msg: Message, err: SiloError) -> Message:
    return _error(msg, 1000 + err.exit_code, f"{type(err).__name__}: {err}")


def _installed_app() -> Callable[[Message, Context], Message]:
    # Imported on first use: torch, transformers and the scrubber load once per node, not per message.
    from client.app import app

    return app


class SiteRuntime:
    """One site's gate and dispatcher, for the life of its node."""

    def __init__(self, site_config: str | Path, coordinator_key: str | Path | None) -> None:
        self.config_path = str(Path(site_config).resolve())
        self.cfg: SiteConfig = load_site_config(self.config_path)
        self.pin = AppPin(self.cfg.site.app)
        self.coordinator_key: Ed25519PublicKey | None = (
            load_public_key(coordinator_key) if coordinator_key is not None else None
        )
        self._app: Callable[[Message, Context], Message] | None = None
        # A runtime that stays up answers about the adapter it received after its reply (answer_later.py).
        LATER.enabled = self.cfg.site.warm_runtime

    def describe(self) -> str:
        key = (
            f"signed with coordinator key {fingerprint(self.coordinator_key)[:16]}"
            if self.coordinator_key is not None
            else "NOT verified (no coordinator key: test setups only)"
        )
        return f"site {self.cfg.site.id}: runs {self.pin.describe()}; run requests {key}"

    @property
    def app(self) -> Callable[[Message, Context], Message]:
        if self._app is None:
            self._app = _installed_app()
        return self._app

    def handle(self, task: TaskInput) -> Outcome:
        msg, context = task.message, task.context
        if msg.metadata.message_type in (MessageType.TRAIN, MessageType.EVALUATE):
            # The last train reply's hold-out answer first: it uses the model this message will. Secure
            # aggregation's stages (only `context.state`, never the model) go on beside it.
            LATER.finish()
        app = identify(task.fab_content)
        try:
            self.admit(task, app)
        except RunRefused as err:
            log.warning(
                "[silo] refused run %s, app sha256 %s (%s message): %s",
                task.run_id,
                app.sha256,
                msg.metadata.message_type,
                err,
            )
            return Outcome(refusal_reply(msg, err), context, ok=False, details=f"refused by the site: {err}")
        # The site's own TOML, whatever the SuperNode was started with.
        context.node_config["site-config"] = self.config_path
        try:
            reply = self.app(msg, context)
        except Exception as err:  # noqa: BLE001 - the node outlives a failed message; the reason stays here
            log.exception("[silo] run %s: %s message failed", task.run_id, msg.metadata.message_type)
            return Outcome(
                _error(msg, UNEXPECTED_ERROR_CODE, f"the site failed: {type(err).__name__} (see the site's log)"),
                context,
                ok=False,
                details=type(err).__name__,
            )
        return Outcome(reply, context, ok=True)

    def after_reply(self) -> None:
        """Once a reply is handed over: the hold-out answer its handler left to compute (answer_later.py)."""
        LATER.start()

    def admit(self, task: TaskInput, app: AppIdentity) -> None:
        """Nothing when this site agreed to run this message of the run of `app`; RunRefused otherwise."""
        if app.sha256 != task.fab_hash:
            raise RunRefused(f"the run's app bundle hashes to {app.sha256}, not to the {task.fab_hash} it claims")
        self.pin.check(app)
        msg = task.message
        kind = msg.metadata.message_type
        scope: dict[str, Any] = {}  # every other message (secure aggregation's stages): app, site and signature
        if kind == MessageType.TRAIN:
            config = self._config(msg)
            scope = {"run_id": str(config.get("run-id", "")), "round": _round(config), "first": 1}
        elif kind == MessageType.EVALUATE:
            scope = {"round": _round(self._config(msg)), "first": 0}
        elif kind == HANDSHAKE_MESSAGE_TYPE:
            # Not whether the request names this site: a signed answer lets the coordinator say why
            # it does not (its registry), and a site it left out is never sent a round.
            scope = {"site_id": None}
        self._agreed(msg, app, **scope)

    def _agreed(self, msg: Message, app: AppIdentity, **scope: Any) -> RunRequest:
        request, _ = verify_run_request(msg.content.config_records.get(RECORD), self.coordinator_key)
        check_run_request(request, app_sha256=app.sha256, **{"site_id": self.cfg.site.id, **scope})
        return request

    @staticmethod
    def _config(msg: Message) -> Any:
        config = msg.content.config_records.get("config")
        if config is None:
            raise RunRefused("the message has no round config")
        return config


def _round(config: Any) -> int:
    value = config.get("server-round")
    if isinstance(value, bool) or not isinstance(value, int):
        raise RunRefused(f"round config `server-round` must be an integer, got {type(value).__name__}")
    return value
