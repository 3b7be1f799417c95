"""What a site does when the coordinator asks it to train or evaluate the global adapter.

records → ingest → split → scrub → tokenize → LoRA training → adapter update back to Flower.
Failures become error replies that say why; when any stage fails, nothing is sent.

Records are scrubbed on every round, in this process, from the raw files: tokenization accepts only
`ScrubbedRecords`, which only the scrubber can make, so no path reaches training around it.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

import torch
from flwr.app import Context, Error, Message, MetricRecord, RecordDict

from client.ingest import load_site_records, split_records
from client.prepare import encode_records
from client.scrub import ScrubbedRecords, build_scrubber, scrub_records
from client.train import evaluate, train_round
from common.adapter import adapter_state, arrays_to_state, hash_state, load_adapter_state, state_to_arrays
from common.config import SiteConfig, TaskType, load_site_config
from common.errors import ScrubFailed, SiloError
from common.model import load_lora_model, load_tokenizer, resolve_device

# Error-reply codes the coordinator records with the reason (Flower reserves small codes).
ERROR_CODE_BASE = 1000


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
        raise ScrubFailed(f"every record of a split was quarantined by scrubbing ({train.quarantined} train, "
                          f"{holdout.quarantined} hold-out); see `silo scrub` to inspect")

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


def load_for_round(msg: Message, context: Context) -> Loaded:
    """Config, data and the model carrying the coordinator's global adapter."""
    cfg = site_config(context)
    configure_threads(cfg)
    device = resolve_device(cfg.training.device)
    global_state = arrays_to_state(msg.content["arrays"])
    data = load_site_data(cfg, load_tokenizer(cfg.model_source()))
    model = load_lora_model(cfg.model_source(), cfg.lora, cfg.task, device=device)
    load_adapter_state(model, global_state)
    return Loaded(cfg, device, data, model, global_state)


def handle_train(msg: Message, context: Context) -> Message:
    """Evaluate the incoming global adapter on the hold-out split, then train on the train split.

    Evaluating here, on receipt, saves the coordinator a second message (and a second process
    start at every site) per round; only the final adapter needs its own evaluate message."""
    try:
        config = msg.content["config"]
        site = load_for_round(msg, context)
        before = evaluate(site.model, site.data.holdout, task=site.cfg.task, device=site.device)
        result = train_round(
            site.model, site.data.train, task=site.cfg.task, training=site.cfg.training, device=site.device,
            global_state=site.global_state, proximal_mu=float(config.get("proximal-mu", 0.0)),
        )
        update = adapter_state(site.model)
    except SiloError as err:
        return error_reply(msg, err)
    metrics = MetricRecord({
        "num-examples": result.num_examples,
        "train_loss": result.loss,
        "steps": result.steps,
        "train_seconds": result.seconds,
        "server-round": int(config["server-round"]),
        **{f"global_{k}": v for k, v in before.metrics().items() if k != "num-examples"},
        "holdout-examples": before.num_examples,
    })
    content = RecordDict({"arrays": state_to_arrays(update), "metrics": metrics})
    content["site"] = _site_record(site.cfg, update, site.data.scrub_report)
    return Message(content=content, reply_to=msg)


def handle_evaluate(msg: Message, context: Context) -> Message:
    try:
        site = load_for_round(msg, context)
        result = evaluate(site.model, site.data.holdout, task=site.cfg.task, device=site.device)
    except SiloError as err:
        return error_reply(msg, err)
    return Message(content=RecordDict({"metrics": MetricRecord(result.metrics())}), reply_to=msg)


def _site_record(cfg: SiteConfig, update: dict[str, torch.Tensor], scrub_report: dict[str, Any]) -> Any:
    from flwr.app import ConfigRecord

    # Counts by entity type only; the scrub report never holds a raw value.
    return ConfigRecord({"site-id": cfg.site.id, "update-sha256": hash_state(update),
                         "scrub-report": json.dumps(scrub_report, sort_keys=True)})


def error_reply(msg: Message, err: SiloError) -> Message:
    """Failures cross the network as error replies, never as raw exceptions or partial updates."""
    return Message(Error(code=ERROR_CODE_BASE + err.exit_code, reason=f"{type(err).__name__}: {err}"), reply_to=msg)
