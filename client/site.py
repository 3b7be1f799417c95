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
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import torch
from flwr.app import ConfigRecord, Context, Error, Message, MetricRecord, RecordDict

from client.distributed_dp import distributed_step, plan_site_round
from client.ingest import load_site_records, split_records
from client.ledger import Ledger
from client.ledger_plan import RoundPlan
from client.prefix_cache import PrefixCache, PrefixCaches
from client.prepare import encode_records
from client.privacy import EvalRelease, make_private, release_evaluation
from client.report_line import evaluation_line, round_line
from client.round_plan import DPPlan, RoundId, plan_dp_round
from client.scrub import ScrubbedRecords, build_scrubber, scrub_records
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
from client.train import Phase, PrivacyWrapper, per_record_outcomes, round_phase, train_round, training_phase
from client.warm import WARM, data_version, model_key, release_private
from common.accounting import DPEvent, NoiseModel, SkellamEvent
from common.adapter import (
    adapter_state,
    arrays_to_state,
    hash_state,
    load_adapter_state,
    numpy_to_state,
    state_to_arrays,
    state_to_numpy,
)
from common.config import SiteConfig, TaskType, WireEncoding, load_site_config
from common.declaration import PrivacyDeclaration, ScrubReport, SiteDeclaration, sum_scrub_reports
from common.distributed_dp import fresh_numpy_generator
from common.errors import BudgetExhausted, ScrubFailed, SiloError, UpdateRejected
from common.keys import generate_signing_key, load_private_key, public_key_raw, save_private_key, save_public_key
from common.model import load_lora_model, load_tokenizer, resolve_device
from common.pki import SiteKit, install_site_signing_key
from common.schema import strict_json
from common.sealing import UpdateBinding, seal_update
from common.secagg import RECORD as SECAGG_RECORD
from common.secagg import STAGE_SETUP, STAGE_SHARE_KEYS, STAGE_UNMASK, SecAggFailed
from common.transport import encode_update, received_global

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

    report = sum_scrub_reports(
        (train.report, holdout.report), numbers=("records_in", "quarantined"), tallies=("entities",)
    )
    return SiteData(train=encode(train.records), holdout=encode(holdout.records), scrub_report=report)


@dataclass
class Loaded:
    cfg: SiteConfig
    device: torch.device
    data: SiteData
    model: Any
    global_state: dict[str, torch.Tensor]  # the global adapter as received, in fp32: training starts here
    received_sha256: str  # hash of the global adapter's bytes as they arrived: the seal binds to it


Number = TypeVar("Number", int, float)


def config_number(config: ConfigRecord, key: str, kind: type[Number], default: Number | None = None) -> Number:
    """A number the coordinator sent in the round's config, type-checked: a wrong one ends the round."""
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UpdateRejected(f"round config `{key}` must be a number, got {value!r}")
    return kind(value)


def wire_encoding(config: ConfigRecord) -> WireEncoding:
    """The encoding the coordinator asked for (fp32 when it names none); anything else ends the round."""
    value = config.get("wire-encoding", WireEncoding.FP32.value)
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        return WireEncoding(value)
    except ValueError:
        raise UpdateRejected(f"round config `wire-encoding` must be one of fp32, fp16, int8, got {value!r}") from None


def load_for_round(msg: Message, context: Context) -> Loaded:
    """Config, data and the model carrying the coordinator's global adapter: the records, the model and
    the tokenizer from the node's warm cache when nothing they were made from changed (client/warm.py)."""
    cfg = site_config(context)
    WARM.start_message(cfg)
    configure_threads(cfg)
    device = resolve_device(cfg.training.device)
    received = arrays_to_state(msg.content.array_records["arrays"])
    global_state = received_global(received)
    source = cfg.model_source()
    tokenizer = WARM.get("tokenizer", source, lambda: load_tokenizer(source))
    data = WARM.get("records", data_version(cfg), lambda: load_site_data(cfg, tokenizer))
    model = WARM.get(
        "model", model_key(cfg, device), lambda: load_lora_model(source, cfg.lora, cfg.task, device=device)
    )
    load_adapter_state(model, global_state)
    return Loaded(cfg, device, data, model, global_state, hash_state(received))


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

    Evaluating here, on receipt, saves the coordinator a second message per round; only the final
    adapter needs its own evaluate message. The answer is a DP release about the hold-out records,
    charged to the ledger before the round is reserved; the round is refused unless the answer and
    the training both fit the budget.

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
            # The incoming global adapter's hold-out answer, charged first; the training after it must fit too.
            before = answer_evaluation(site, ledger, rid, then=plan.event)
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
        log.info("[silo] %s", round_line(rid, entry, site.data.scrub_report, update_sha, ledger_path(cfg), msg))
        metrics: dict[str, Any] = {
            "num-examples": result.num_examples,
            "steps": result.steps,
            "train_seconds": result.seconds,
            "prepare_seconds": prepared - t0,
            "eval_seconds": evaluated - prepared,
            "server-round": rid.round,
            **{f"global_{k}": v for k, v in before.metrics().items() if k != "num-examples"},
            "holdout-examples": before.num_examples,
        }
        declarations = _site_record(cfg, update_sha, site.data.scrub_report, reserved, entry)
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
        metrics["site_seconds"] = time.perf_counter() - t0
        seal_round(signing_key, rid, site, sent, metrics, declarations)
    except Exception as err:  # noqa: BLE001 - any failure: an error reply without the exception's text
        WARM.drop("model")  # a round that failed half-way may leave the model anywhere: load it afresh
        return error_reply(msg, err)
    finally:
        if site is not None:
            release_private(private, site.model)
        WARM.end_message()
    content = RecordDict({"arrays": state_to_arrays(sent), "metrics": MetricRecord(metrics)})
    content["site"] = declarations
    return Message(content=content, reply_to=msg)


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
        **{f"global_{k}": v for k, v in before.metrics().items() if k != "num-examples"},
        "holdout-examples": before.num_examples,
    }
    log.info("[silo] round %s: one distributed step over %d sampled records (kept at the site)", rid.round, taken)
    declarations = _site_record(cfg, update_sha, site.data.scrub_report, reserved, entry)
    declarations["secagg"] = json.dumps(secagg_declaration, sort_keys=True)
    sent = numpy_to_state(masked)
    seal_round(signing_key, rid, site, sent, metrics, declarations)
    content = RecordDict({"arrays": state_to_arrays(sent), "metrics": MetricRecord(metrics)})
    content["site"] = declarations
    return Message(content=content, reply_to=msg)


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


def prefix_cache(site: Loaded, dataset: torch.utils.data.TensorDataset, role: str) -> PrefixCache | None:
    """`dataset`'s states below the model's trained layers (client/prefix_cache.py), kept in the node's
    warm state while valid; None with `[training] prefix_cache = false` or when no layer splits them."""
    if not site.cfg.training.prefix_cache:
        return None
    caches = WARM.get("prefix_caches", model_key(site.cfg, site.device), PrefixCaches)
    return caches.get(site.model, dataset, device=site.device, role=role)


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
    except Exception as err:  # noqa: BLE001 - any failure: an error reply without the exception's text
        return error_reply(msg, err)
    finally:
        WARM.end_message()
    log.info("[silo] %s", evaluation_line(rid, entries, msg))
    # The site's total after this answer, as a training reply declares it (the coordinator's live view shows
    # it): a number the site already sends every round, never a record or a statistic of one.
    spent = {"epsilon_total": entries[-1]["epsilon_total"], "budget_epsilon": entries[-1]["budget_epsilon"]}
    site_record = ConfigRecord({"site-id": cfg.site.id, "privacy": json.dumps(strict_json(spent))})
    return Message(content=RecordDict({"metrics": MetricRecord(release.metrics()), "site": site_record}), reply_to=msg)


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
