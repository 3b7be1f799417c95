"""What a site does when the coordinator asks it to train or evaluate the global adapter, or to take a
step of secure aggregation: the Flower handlers, each a page.

records → ingest → split → scrub → tokenize (client/site_data.py) → LoRA training → seal (sign,
client/replies.py) → adapter update back to Flower. Failures become error replies with a fixed reason
(client/replies.py `error_reply`); when any stage fails, signing included, nothing is sent.

Every answer about the site's records is paid for in its ledger (client/site_state.py) before it leaves:
the training round (DP-SGD, fresh OS-seeded noise) and every evaluation answer (a Gaussian release about
the hold-out records, client/privacy.py `release_evaluation`), composed into one total against
`budget_epsilon`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from flwr.app import ConfigRecord, Context, Message, RecordDict

from client import warm
from client.answer_later import LATER, PENDING_FILE, PendingAnswer
from client.distributed_dp import distributed_step, plan_site_round
from client.ledger import Ledger
from client.ledger_plan import RoundPlan
from client.privacy import EvalRelease, make_private, release_evaluation
from client.replies import declaration_record, error_reply, seal_round
from client.report_line import evaluation_line, round_line
from client.round_plan import DPPlan, RoundId, plan_dp_round
from client.secagg import (
    accept_shares,
    grid_step,
    key_list_size,
    mask_integers,
    mask_update,
    reveal_shares,
    setup,
    share_keys,
)
from client.site_data import Loaded, config_number, load_for_round, prefix_cache, site_config, wire_encoding
from client.site_state import LEDGER_LOCK_TIMEOUT_S, ledger_path, site_signing_key
from client.train import Phase, PrivacyWrapper, per_record_outcomes, round_phase, train_round, training_phase
from client.warm import release_private
from common.accounting import DPEvent, NoiseModel, SkellamEvent
from common.adapter import (
    adapter_state,
    hash_state,
    load_adapter_state,
    numpy_to_state,
    state_to_arrays,
    state_to_numpy,
)
from common.config import SiteConfig
from common.distributed_dp import fresh_numpy_generator
from common.errors import SiloError
from common.reply import reply_content
from common.schema import strict_json
from common.secagg import RECORD as SECAGG_RECORD
from common.secagg import STAGE_SETUP, STAGE_SHARE_KEYS, STAGE_UNMASK, SecAggFailed
from common.transport import encode_update

log = logging.getLogger("silo.site")


def handle_train(msg: Message, context: Context) -> Message:
    """Evaluate the incoming global adapter on the hold-out split, then train on the train split.

    Privacy: under the ledger's lock, the round is planned and reserved against the site's budget
    BEFORE any training (refused with BudgetExhausted otherwise), trained with DP-SGD, and recorded
    with the update's sha256 before the update is sent. Any failure: an error reply, no update.

    Evaluating here saves the coordinator a second message per round; only the final adapter needs its
    own evaluate message. The answer is a DP release about the hold-out records, charged to the ledger
    before the round is reserved; the round is refused unless the answer and the training both fit the
    budget. A long-lived runtime (client/answer_later.py) trains first instead: this reply carries the
    answer about last round's adapter, computed and charged after last round's reply, and this round's
    adapter is answered about after this reply (`answer_after_reply`).

    The update leaves as its delta from the global adapter received, in the encoding the coordinator
    asked for (common/transport.py; post-processing of the noised adapter). With secure aggregation
    (a "secagg" record in the message) the shares from the other sites are opened before anything is
    planned, and only after the ledger has recorded the round is the update clipped, quantised and
    masked (client/secagg.py); the seal then covers the masked vector that is sent, while the ledger
    and the declared `update-sha256` name the adapter trained."""
    t0 = time.perf_counter()
    private = site = None
    try:
        config = msg.content.config_records["config"]
        secagg = msg.content.config_records.get(SECAGG_RECORD)
        encoding = wire_encoding(config)
        site = load_for_round(msg, context)
        cfg = site.cfg
        later = LATER.enabled and cfg.site.warm_runtime
        rid = RoundId(str(config.get("run-id", "unknown")), config_number(config, "server-round", int), cfg.site.id)
        if secagg is not None:
            accept_shares(context.state, secagg)
        if cfg.privacy.noise is NoiseModel.DISTRIBUTED:
            return train_distributed(msg, context, site, rid, with_secagg=secagg is not None)
        plan = plan_dp_round(cfg, len(site.data.train))
        phase = round_phase(rid.round, cfg.training)  # a linear-probe round trains the head alone
        prepared = time.perf_counter()
        signing_key = site_signing_key(cfg)
        with (
            Ledger.open(ledger_path(cfg), signing_key=signing_key, lock_timeout=LEDGER_LOCK_TIMEOUT_S) as ledger,
            training_phase(site.model, phase),
        ):
            before = None
            if not later:  # the incoming global adapter's hold-out answer, charged first; the training must fit
                release = answer_evaluation(site, ledger, rid, then=plan.event)
                before = PendingAnswer.of(rid.run_id, rid.round - 1, release)
            evaluated = time.perf_counter()
            reserved = reserve_round(ledger, cfg, plan, rid, phase)
            result = train_round(
                site.model,
                site.data.train,
                task=cfg.task,
                training=cfg.training,
                device=site.device,
                global_state=site.global_state,
                proximal_mu=config_number(config, "proximal-mu", float, default=0.0),
                privacy=dp_wrapper(cfg, plan) if plan.dp_enabled else None,
                prefix=prefix_cache(site, site.data.train, "train"),
            )
            private = result.private
            update = adapter_state(site.model)
            wire = encode_update(update, site.global_state, encoding) if secagg is None else update
            update_sha = hash_state(wire)
            entry = ledger.record_round(
                reserved,
                **rid.fields(),
                max_grad_norm=plan.max_grad_norm,
                dataset_size=plan.dataset_size,
                update_sha256=update_sha,
                accountant_history=private.history() if private is not None else None,
                noise_source=private.noise_source if private is not None else None,
            )
        # The training loss is an exact statistic of the training records: it stays in the site's log.
        kept = "[silo] round %s: trained %d steps, mean training loss %.4f (kept at the site)"
        log.info(kept, rid.round, result.steps, result.loss)
        line = round_line(rid, entry, site.data.scrub_report, update_sha, ledger_path(cfg), msg, answer_after=later)
        log.info("[silo] %s", line)
        metrics: dict[str, Any] = {
            "num-examples": result.num_examples,
            "steps": result.steps,
            "train_seconds": result.seconds,
            "prepare_seconds": prepared - t0,
            # Deferred: what the message waited for the last answer to be computed, before it was handled.
            "eval_seconds": LATER.waited_s if later else evaluated - prepared,
            "server-round": rid.round,
        }
        if later:  # the answer about the adapter received last round (answer_later.py): taken once trained
            before = LATER.take(rid.run_id, kept=cfg.state_dir / PENDING_FILE)
        if before is not None:
            metrics.update(before.metrics())
        declarations = declaration_record(cfg, update_sha, site.data.scrub_report, reserved, entry)
        sent = wire
        if secagg is not None:
            masked, secagg_declaration = mask_update(
                context.state,
                update=state_to_numpy(update),
                global_arrays=state_to_numpy(site.global_state),
                weight=result.num_examples,
            )
            sent = numpy_to_state(masked)
            declarations["secagg"] = json.dumps(secagg_declaration, sort_keys=True)
        metrics["site_seconds"] = time.perf_counter() - t0 + (LATER.waited_s if later else 0.0)
        seal_round(signing_key, rid, site, sent, metrics, declarations)
        if later:  # after the reply is handed over: this round's adapter's answer, for the next reply
            LATER.schedule(answer_after_reply(site, rid, msg, then=plan.event))
    except Exception as err:  # noqa: BLE001 - any failure: an error reply without the exception's text
        warm.WARM.drop("model")  # a round that failed half-way may leave the model anywhere: load it afresh
        return error_reply(msg, err)
    finally:
        if site is not None:
            release_private(private, site.model)
        warm.WARM.end_message()
    return Message(content=reply_content(declarations, metrics=metrics, arrays=state_to_arrays(sent)), reply_to=msg)


def train_distributed(msg: Message, context: Context, site: Loaded, rid: RoundId, *, with_secagg: bool) -> Message:
    """A distributed-noise round (`[privacy] noise = "distributed"`, client/distributed_dp.py): the hold-out
    answer and the round charged first, then one DP-FedSGD step in integers with this site's Skellam
    share, recorded (both ε figures), masked, sealed. Its vector carries only a share of the noise, so it
    never leaves without secure aggregation, nor with fewer than t sites in the key list."""
    if not with_secagg:
        raise SecAggFailed('`noise = "distributed"` adds only a share of the noise: nothing is sent without SecAgg')
    cfg, privacy = site.cfg, site.cfg.privacy
    distributed = plan_site_round(cfg, site.model, len(site.data.train), grid_step=grid_step(context.state))
    if key_list_size(context.state) < distributed.min_honest:
        raise SecAggFailed(f"fewer sites in the key list than distributed_min_honest {distributed.min_honest}")
    signing_key = site_signing_key(cfg)
    with Ledger.open(ledger_path(cfg), signing_key=signing_key, lock_timeout=LEDGER_LOCK_TIMEOUT_S) as ledger:
        before = answer_evaluation(site, ledger, rid, then=distributed.event(distributed.budget_figure))
        reserved = ledger.plan_round(
            noise_multiplier=distributed.noise_multiplier,
            sample_rate=distributed.sample_rate,
            steps=1,
            delta=privacy.delta,
            accountant=privacy.accountant,
            budget_epsilon=privacy.budget_epsilon,
            budget_delta=privacy.budget_delta,
            distributed=distributed,
            **rid.fields(),
        )
        integers, taken = distributed_step(
            site.model,
            site.data.train,
            task=cfg.task,
            plan=distributed,
            learning_rate=cfg.training.learning_rate,
            max_grad_norm=privacy.max_grad_norm,
            device=site.device,
            rng=fresh_numpy_generator(),
            prefix=prefix_cache(site, site.data.train, "train"),
        )
        update_sha = hash_state(numpy_to_state(integers))
        entry = ledger.record_round(
            reserved,
            **rid.fields(),
            max_grad_norm=privacy.max_grad_norm,
            dataset_size=len(site.data.train),
            update_sha256=update_sha,
            noise_source="os-seeded",
        )
    masked, secagg_declaration = mask_integers(context.state, integers=integers, min_honest=distributed.min_honest)
    log.info("[silo] %s", round_line(rid, entry, site.data.scrub_report, update_sha, ledger_path(cfg), msg))
    metrics: dict[str, Any] = {
        "num-examples": len(site.data.train),
        "steps": 1,
        "server-round": rid.round,
        **PendingAnswer.of(rid.run_id, rid.round - 1, before).metrics(),
    }
    log.info("[silo] round %s: one distributed step over %d sampled records (kept at the site)", rid.round, taken)
    declarations = declaration_record(cfg, update_sha, site.data.scrub_report, reserved, entry)
    declarations["secagg"] = json.dumps(secagg_declaration, sort_keys=True)
    sent = numpy_to_state(masked)
    seal_round(signing_key, rid, site, sent, metrics, declarations)
    return Message(content=reply_content(declarations, metrics=metrics, arrays=state_to_arrays(sent)), reply_to=msg)


def reserve_round(ledger: Ledger, cfg: SiteConfig, plan: DPPlan, rid: RoundId, phase: Phase = Phase.LORA) -> RoundPlan:
    """`plan` checked against the site's budget and reserved in its ledger, before any training."""
    privacy = cfg.privacy
    return ledger.plan_round(
        noise_multiplier=plan.noise_multiplier,
        sample_rate=plan.sample_rate,
        steps=plan.steps,
        delta=privacy.delta,
        accountant=privacy.accountant,
        budget_epsilon=privacy.budget_epsilon,
        budget_delta=privacy.budget_delta,
        dp_enabled=plan.dp_enabled,
        poisson_sampling=privacy.poisson_sampling,
        phase=phase.value,
        **rid.fields(),
    )


def dp_wrapper(cfg: SiteConfig, plan: DPPlan) -> PrivacyWrapper:
    """`make_private` with the round's planned noise and clipping (fresh OS-seeded randomness inside)."""

    def wrap(model: Any, optimizer: Any, loader: Any) -> Any:
        assert plan.max_grad_norm is not None  # planned with DP on
        return make_private(
            model,
            optimizer,
            loader,
            config=cfg.privacy,
            noise_multiplier=plan.noise_multiplier,
            max_grad_norm=plan.max_grad_norm,
        )

    return wrap


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


def handle_evaluate(msg: Message, context: Context) -> Message:
    """One DP answer about the hold-out records for the adapter sent, charged to the ledger first.

    A request the budget cannot pay for is refused before the model or the records are loaded, so a
    coordinator asking again and again learns nothing more once the budget is spent."""
    try:
        config = msg.content.config_records.get("config") or ConfigRecord()
        server_round = config_number(config, "server-round", int, default=0)
        cfg = site_config(context)
        rid = RoundId(str(config.get("run-id", "unknown")), server_round, cfg.site.id)
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
            release = answer_evaluation(site, ledger, rid)
            entries = ledger.entries()
        # The answer about the last round's adapter, computed after that round's reply, leaves with this one.
        pending = LATER.take(rid.run_id, kept=cfg.state_dir / PENDING_FILE) if LATER.enabled else None
    except Exception as err:  # noqa: BLE001 - any failure: an error reply without the exception's text
        return error_reply(msg, err)
    finally:
        warm.WARM.end_message()
    log.info("[silo] %s", evaluation_line(rid, entries, msg))
    # The site's total after this answer, as a training reply declares it (the coordinator's live view shows
    # it): a number the site already sends every round, never a record or a statistic of one.
    spent = {"epsilon_total": entries[-1]["epsilon_total"], "budget_epsilon": entries[-1]["budget_epsilon"]}
    site_record = ConfigRecord({"site-id": cfg.site.id, "privacy": json.dumps(strict_json(spent))})
    metrics = {**release.metrics(), **(pending.metrics() if pending is not None else {})}
    return Message(content=reply_content(site_record, metrics=metrics), reply_to=msg)


def answer_after_reply(
    site: Loaded, rid: RoundId, msg: Message, *, then: DPEvent | SkellamEvent
) -> Callable[[], PendingAnswer | None]:
    """The job the runtime runs once round `rid`'s reply is handed over (answer_later.py): the DP answer
    about the adapter that round's message carried, charged to the ledger (with `then`, the next round's
    training, required to fit too) before it is kept for the next reply. A failure or a budget that
    cannot pay for it: no answer (a charge already made stays spent), and the next round goes on."""

    def job() -> PendingAnswer | None:
        try:
            load_adapter_state(site.model, site.global_state)  # the model holds this round's training
            with Ledger.open(
                ledger_path(site.cfg), signing_key=site_signing_key(site.cfg), lock_timeout=LEDGER_LOCK_TIMEOUT_S
            ) as ledger:
                release = answer_evaluation(site, ledger, rid, then=then)
                entries = ledger.entries()
        except Exception as err:  # noqa: BLE001 - nothing leaves; the site's log says why, the reply does not
            log.warning(
                "[silo] round %s: no hold-out answer for the adapter received (%s)", rid.round, type(err).__name__
            )
            warm.WARM.drop("model")
            return None
        pending = PendingAnswer.of(rid.run_id, rid.round - 1, release)
        # Charged: kept on disk too, so that a runtime that dies before its next reply loses nothing. Never
        # before the charge (a kept answer is sent without another); one that dies in between loses the answer.
        try:
            pending.save(site.cfg.state_dir / PENDING_FILE)
        except OSError as err:
            log.warning(
                "[silo] round %s: the hold-out answer is kept in memory only (%s)", rid.round, type(err).__name__
            )
        log.info("[silo] %s (sent with the next reply)", evaluation_line(rid, entries, msg))
        return pending

    return job


def answer_evaluation(
    site: Loaded, ledger: Ledger, rid: RoundId, *, then: DPEvent | SkellamEvent | None = None
) -> EvalRelease:
    """The DP release about the hold-out records for `site.model`, recorded in `ledger` before it is
    returned (`then`: an event the caller spends next, which must fit the budget as well)."""
    cfg, privacy = site.cfg, site.cfg.privacy
    cache = prefix_cache(site, site.data.holdout, "holdout")
    model, holdout = (cache.top, cache.dataset) if cache is not None else (site.model, site.data.holdout)
    losses, preds, golds = per_record_outcomes(model, holdout, task=cfg.task, device=site.device)
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
        evaluated_sha256=site.received_sha256,
        noise_source=release.noise_source,
        **rid.fields(),
        also_fits=[then] if then is not None else (),
    )
    return release
