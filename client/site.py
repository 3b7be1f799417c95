"""What a site does when the coordinator asks it to train or evaluate the global adapter.

records → ingest → split → scrub → tokenize → LoRA training → seal (sign) → adapter update back to Flower.
Failures become error replies with a reason code and a fixed message (`error_reply`): an exception's text
can carry record content, so it stays in the site's own log; when any stage fails, signing included,
nothing is sent.

Every answer about the site's records is paid for in its ledger before it leaves: the training round
(DP-SGD, fresh OS-seeded noise) and every evaluation answer (a Gaussian release about the hold-out
records, client/privacy.py `release_evaluation`), composed into one total against `budget_epsilon`.

Records are scrubbed on every round, in this process, from the raw files: tokenization accepts only
`ScrubbedRecords`, which only the scrubber can make, so no path reaches training around it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import torch
from flwr.app import ConfigRecord, Context, Error, Message, MetricRecord, RecordDict

from client.ingest import load_site_records, split_records
from client.ledger import Ledger
from client.prepare import encode_records
from client.privacy import EvalRelease, make_private, planned_sample_rate, release_evaluation
from client.scrub import ScrubbedRecords, build_scrubber, scrub_records
from client.secagg import accept_shares, mask_update, reveal_shares, setup, share_keys
from client.train import per_record_outcomes, round_plan_steps, train_round
from common.accounting import DPEvent
from common.adapter import (
    adapter_state,
    arrays_to_state,
    hash_state,
    load_adapter_state,
    numpy_to_state,
    state_to_arrays,
    state_to_numpy,
)
from common.config import SiteConfig, TaskType, load_site_config
from common.declaration import PrivacyDeclaration, ScrubReport, SiteDeclaration
from common.errors import BudgetExhausted, ScrubFailed, SiloError, UpdateRejected
from common.keys import generate_signing_key, load_private_key, public_key_raw, save_private_key, save_public_key
from common.model import load_lora_model, load_tokenizer, resolve_device
from common.pki import SiteKit, install_site_signing_key
from common.sealing import UpdateBinding, seal_update
from common.secagg import RECORD as SECAGG_RECORD
from common.secagg import STAGE_SETUP, STAGE_SHARE_KEYS, STAGE_UNMASK

# Error-reply codes the coordinator records with the reason (Flower reserves small codes).
ERROR_CODE_BASE = 1000

log = logging.getLogger("silo.site")


def site_config(context: Context) -> SiteConfig:
    path = context.node_config.get("site-config")
    if not path:
        raise SiloError("this SuperNode has no `site-config` in its --node-config")
    return load_site_config(str(path))


def configure_threads(cfg: SiteConfig) -> None:
    """Small machines run several sites: one intra-op thread each unless the site says otherwise."""
    os.environ["OMP_NUM_THREADS"] = str(cfg.training.threads)
    torch.set_num_threads(cfg.training.threads)


@dataclass(frozen=True)
class SiteData:
    train: torch.utils.data.TensorDataset
    holdout: torch.utils.data.TensorDataset
    scrub_report: dict[str, Any]


def scrub_fields(cfg: SiteConfig, records: list[dict[str, Any]]) -> tuple[str, ...]:
    """The text fields training reads (text, or prompt and response), plus any the site's `[scrub]`
    names that the records have; never the label. A record lacking one of them is quarantined."""
    d = cfg.data
    prompted = cfg.task.type is TaskType.CAUSAL_LM and any(d.prompt_field in r for r in records)
    used = (d.prompt_field, d.response_field) if prompted else (d.text_field,)
    extra = tuple(f for f in cfg.scrub.fields if any(f in r for r in records))
    return tuple(dict.fromkeys((*used, *extra)))


def load_site_data(cfg: SiteConfig, tokenizer: Any) -> SiteData:
    records = load_site_records(cfg.data_dir, cfg.data, cfg.task)
    split = split_records(records, holdout_fraction=cfg.data.holdout_fraction, seed=cfg.data.seed)
    scrubber = build_scrubber(replace(cfg.scrub, fields=scrub_fields(cfg, records)))
    train, holdout = scrub_records(split.train, scrubber), scrub_records(split.holdout, scrubber)
    if not len(train.records) or not len(holdout.records):
        raise ScrubFailed(
            f"every record of a split was quarantined by scrubbing ({train.quarantined} train, "
            f"{holdout.quarantined} hold-out); see `silo scrub` to inspect"
        )

    def encode(recs: ScrubbedRecords) -> torch.utils.data.TensorDataset:
        return encode_records(recs, tokenizer, data=cfg.data, task=cfg.task, max_length=cfg.model.max_length)

    report = {
        "records_in": train.report["records_in"] + holdout.report["records_in"],
        "quarantined": train.quarantined + holdout.quarantined,
        "entities": dict(Counter(train.report["entities"]) + Counter(holdout.report["entities"])),
    }
    return SiteData(train=encode(train.records), holdout=encode(holdout.records), scrub_report=report)


@dataclass
class Loaded:
    cfg: SiteConfig
    device: torch.device
    data: SiteData
    model: Any
    global_state: dict[str, torch.Tensor]


Number = TypeVar("Number", int, float)


def config_number(config: ConfigRecord, key: str, kind: type[Number], default: Number | None = None) -> Number:
    """A number the coordinator sent in the round's config, type-checked: a wrong one ends the round."""
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UpdateRejected(f"round config `{key}` must be a number, got {value!r}")
    return kind(value)


def load_for_round(msg: Message, context: Context) -> Loaded:
    """Config, data and the model carrying the coordinator's global adapter."""
    cfg = site_config(context)
    configure_threads(cfg)
    device = resolve_device(cfg.training.device)
    global_state = arrays_to_state(msg.content.array_records["arrays"])
    data = load_site_data(cfg, load_tokenizer(cfg.model_source()))
    model = load_lora_model(cfg.model_source(), cfg.lora, cfg.task, device=device)
    load_adapter_state(model, global_state)
    return Loaded(cfg, device, data, model, global_state)


def site_signing_key(cfg: SiteConfig) -> Any:
    """The site's Ed25519 key that signs its ledger (made on first use, 0600, beside the ledger).
    Auditors verify with `<state_dir>/site_signing.pub` or `silo ledger export`.

    A key made here starts the site's ledger with it; from then on a missing ledger is refused
    (client/ledger.py): losing the ledger must not restart the budget."""
    path = cfg.state_dir / "site_signing.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = generate_signing_key()
        save_private_key(key, path)
        save_public_key(key, path.with_suffix(".pub"))
        Ledger.open(ledger_path(cfg), signing_key=key, create=True).close()
    return load_private_key(path)


def install_kit_signing_key(kit: SiteKit, cfg: SiteConfig) -> None:
    """Install the signing key of the site's kit (`silo keys`) into its `state_dir`. A key that was not
    there yet starts the site's ledger; a key already there keeps its ledger, which must exist (a
    lost ledger is refused at the next round, never silently restarted)."""
    new = not (cfg.state_dir / kit.signing_key.name).exists()
    installed = install_site_signing_key(kit, cfg.state_dir)
    path = ledger_path(cfg)
    if new and not path.exists() and not path.with_name(path.name + ".head").exists():
        Ledger.open(path, signing_key=load_private_key(installed), create=True).close()


def ledger_path(cfg: SiteConfig) -> Path:
    return cfg.state_dir / "privacy_ledger.jsonl"


# Seconds to wait for the ledger lock held by another round or run at this site before refusing.
LEDGER_LOCK_TIMEOUT_S = 30.0


def handle_train(msg: Message, context: Context) -> Message:
    """Evaluate the incoming global adapter on the hold-out split, then train on the train split.

    Privacy: under the ledger's lock, the round is planned and reserved against the site's budget
    BEFORE any training (refused with BudgetExhausted otherwise), trained with DP-SGD, and recorded
    with the update's sha256 before the update is sent. Any failure: an error reply, no update.

    Evaluating here, on receipt, saves the coordinator a second message (and a second process
    start at every site) per round; only the final adapter needs its own evaluate message. The
    answer is a DP release about the hold-out records, charged to the ledger before the round is
    reserved; the round is refused unless the answer and the training both fit the budget.

    With secure aggregation (a "secagg" record in the message) the shares from the other sites are
    opened before anything is planned, and only after the ledger has recorded the round is the
    update clipped, quantised and masked (client/secagg.py); the seal then covers the masked vector
    that is sent, while the ledger and the declared `update-sha256` name the adapter trained."""
    try:
        config = msg.content.config_records["config"]
        run_id, server_round = str(config.get("run-id", "unknown")), config_number(config, "server-round", int)
        secagg = msg.content.config_records.get(SECAGG_RECORD)
        site = load_for_round(msg, context)
        if secagg is not None:
            accept_shares(context.state, secagg)
        cfg, privacy = site.cfg, site.cfg.privacy
        n = len(site.data.train)
        batch_size, steps = round_plan_steps(n, cfg.training)
        sample_rate = planned_sample_rate(dataset_size=n, batch_size=batch_size)
        sigma = privacy.resolve_noise_multiplier(sample_rate=sample_rate, steps_per_round=steps)
        signing_key = site_signing_key(cfg)
        with Ledger.open(ledger_path(cfg), signing_key=signing_key, lock_timeout=LEDGER_LOCK_TIMEOUT_S) as ledger:
            # The incoming global adapter's hold-out answer, charged first; the training after it must fit too.
            before = answer_evaluation(
                site, ledger, run_id=run_id, server_round=server_round, then=DPEvent(sigma, sample_rate, steps)
            )
            plan = ledger.plan_round(
                noise_multiplier=sigma,
                sample_rate=sample_rate,
                steps=steps,
                delta=privacy.delta,
                accountant=privacy.accountant,
                budget_epsilon=privacy.budget_epsilon,
                budget_delta=privacy.budget_delta,
                dp_enabled=privacy.enabled,
                poisson_sampling=privacy.poisson_sampling,
                run_id=run_id,
                round=server_round,
                site_id=cfg.site.id,
            )

            def dp(model: Any, optimizer: Any, loader: Any) -> Any:
                return make_private(
                    model,
                    optimizer,
                    loader,
                    config=privacy,
                    noise_multiplier=sigma,
                    max_grad_norm=privacy.max_grad_norm,
                )

            result = train_round(
                site.model,
                site.data.train,
                task=cfg.task,
                training=cfg.training,
                device=site.device,
                global_state=site.global_state,
                proximal_mu=config_number(config, "proximal-mu", float, default=0.0),
                privacy=dp if privacy.enabled else None,
            )
            update = adapter_state(site.model)
            update_sha = hash_state(update)
            entry = ledger.record_round(
                plan,
                run_id=run_id,
                round=server_round,
                site_id=cfg.site.id,
                max_grad_norm=privacy.max_grad_norm if privacy.enabled else None,
                dataset_size=n,
                update_sha256=update_sha,
                accountant_history=result.private.history() if result.private is not None else None,
                noise_source=result.private.noise_source if result.private is not None else None,
            )
        # The training loss is an exact statistic of the training records: it stays in the site's log.
        kept = "[silo] round %s: trained %d steps, mean training loss %.4f (kept at the site)"
        log.info(kept, server_round, result.steps, result.loss)
        metrics: dict[str, Any] = {
            "num-examples": result.num_examples,
            "steps": result.steps,
            "train_seconds": result.seconds,
            "server-round": server_round,
            **{f"global_{k}": v for k, v in before.metrics().items() if k != "num-examples"},
            "holdout-examples": before.num_examples,
        }
        declarations = _site_record(cfg, update_sha, site.data.scrub_report, plan, entry)
        sent = update
        if secagg is not None:
            masked, secagg_declaration = mask_update(
                context.state,
                update=state_to_numpy(update),
                global_arrays=state_to_numpy(site.global_state),
                weight=result.num_examples,
            )
            sent = numpy_to_state(masked)
            declarations["secagg"] = json.dumps(secagg_declaration, sort_keys=True)
        declarations.update(
            seal_fields(
                signing_key,
                run_id=run_id,
                round=server_round,
                site_id=cfg.site.id,
                update_sha256=hash_state(sent),
                global_sha256=hash_state(site.global_state),
                metrics=metrics,
                declarations=declarations,
            )
        )
    except Exception as err:  # noqa: BLE001 - any failure: an error reply without the exception's text
        return error_reply(msg, err)
    content = RecordDict({"arrays": state_to_arrays(sent), "metrics": MetricRecord(metrics)})
    content["site"] = declarations
    return Message(content=content, reply_to=msg)


def handle_secagg(msg: Message, context: Context) -> Message:
    """The key stages of secure aggregation (setup, share-keys, unmask); see client/secagg.py.

    The secrets live in `context.state`; the reply carries only public keys, encrypted shares, or
    the shares the protocol allows this site to reveal."""
    try:
        request = msg.content.config_records.get(SECAGG_RECORD)
        stage = request.get("stage") if request is not None else None
        if request is None or stage not in (STAGE_SETUP, STAGE_SHARE_KEYS, STAGE_UNMASK):
            raise SiloError(f"not a secure aggregation request (stage {stage!r})")
        if stage == STAGE_SETUP:
            reply = setup(context.state, request, node_id=msg.metadata.dst_node_id)
        elif stage == STAGE_SHARE_KEYS:
            reply = share_keys(context.state, request)
        else:
            reply = reveal_shares(context.state, request)
    except Exception as err:  # noqa: BLE001 - malformed requests included: an error reply, no exception text
        return error_reply(msg, err)
    return Message(content=RecordDict({SECAGG_RECORD: reply}), reply_to=msg)


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


def handle_evaluate(msg: Message, context: Context) -> Message:
    """One DP answer about the hold-out records for the adapter sent, charged to the ledger first.

    A request the budget cannot pay for is refused before the model or the records are loaded, so a
    coordinator asking again and again learns nothing more once the budget is spent."""
    try:
        config = msg.content.config_records.get("config") or ConfigRecord()
        run_id = str(config.get("run-id", "unknown"))
        server_round = config_number(config, "server-round", int, default=0)
        cfg = site_config(context)
        signing_key = site_signing_key(cfg)
        with Ledger.open(ledger_path(cfg), signing_key=signing_key, lock_timeout=LEDGER_LOCK_TIMEOUT_S) as ledger:
            ledger.require_budget(
                [cfg.privacy.eval_event],
                delta=cfg.privacy.delta,
                accountant=cfg.privacy.accountant,
                budget_epsilon=cfg.privacy.budget_epsilon,
                what="this evaluation",
            )
            site = load_for_round(msg, context)
            release = answer_evaluation(site, ledger, run_id=run_id, server_round=server_round)
    except Exception as err:  # noqa: BLE001 - any failure: an error reply without the exception's text
        return error_reply(msg, err)
    return Message(content=RecordDict({"metrics": MetricRecord(release.metrics())}), reply_to=msg)


def answer_evaluation(
    site: Loaded, ledger: Ledger, *, run_id: str, server_round: int, then: DPEvent | None = None
) -> EvalRelease:
    """The DP release about the hold-out records for `site.model`, recorded in `ledger` before it is
    returned (`then`: an event the caller spends next, which must fit the budget as well)."""
    cfg, privacy = site.cfg, site.cfg.privacy
    losses, preds, golds = per_record_outcomes(site.model, site.data.holdout, task=cfg.task, device=site.device)
    correct = (preds == golds).double() if preds is not None and golds is not None else None
    release = release_evaluation(
        losses, correct, loss_clip=privacy.eval_loss_clip, noise_multiplier=privacy.eval_event.noise_multiplier
    )
    ledger.charge_evaluation(
        release.event,
        delta=privacy.delta,
        accountant=privacy.accountant,
        budget_epsilon=privacy.budget_epsilon,
        budget_delta=privacy.budget_delta,
        dataset_size=release.num_examples,
        evaluated_sha256=hash_state(site.global_state),
        noise_source=release.noise_source,
        run_id=run_id,
        round=server_round,
        site_id=cfg.site.id,
        also_fits=[then] if then is not None else (),
    )
    return release


def _site_record(
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
