"""What a site holds for a round: its configuration, its records (ingested, split, scrubbed, encoded) and
the model carrying the coordinator's global adapter, kept warm between messages while nothing they were
made from changed (client/warm.py).

Records are scrubbed in this process from the raw files: tokenization accepts only `ScrubbedRecords`,
which only the scrubber can make, so no path reaches training around it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import torch
from flwr.app import ConfigRecord, Context, Message

from client import warm
from client.ingest import load_site_records, split_records
from client.prefix_cache import PrefixCache, PrefixCaches
from client.prepare import encode_records
from client.scrub import ScrubbedRecords, build_scrubber, scrub_records
from client.warm import data_version, model_key
from common.adapter import arrays_to_state, hash_state, load_adapter_state
from common.config import SiteConfig, TaskType, WireEncoding, load_site_config
from common.declaration import sum_scrub_reports
from common.errors import ScrubFailed, SiloError, UpdateRejected
from common.model import load_lora_model, load_tokenizer, resolve_device
from common.transport import received_global


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
    warm.WARM.start_message(cfg)
    configure_threads(cfg)
    device = resolve_device(cfg.training.device)
    received = arrays_to_state(msg.content.config_records["arrays"])
    global_state = received_global(received)
    source = cfg.model_source()
    tokenizer = warm.WARM.get("tokenizer", source, lambda: load_tokenizer(source))
    data = warm.WARM.get("records", data_version(cfg), lambda: load_site_data(cfg, tokenizer))
    model = warm.WARM.get(
        "model", model_key(cfg, device), lambda: load_lora_model(source, cfg.lora, cfg.task, device=device)
    )
    load_adapter_state(model, global_state)
    return Loaded(cfg, device, data, model, global_state, hash_state(received))


def prefix_cache(site: Loaded, dataset: torch.utils.data.TensorDataset, role: str) -> PrefixCache | None:
    """`dataset`'s states below the model's trained layers (client/prefix_cache.py), kept in the node's
    warm state while valid; None with `[training] prefix_cache = false` or when no layer splits them."""
    if not site.cfg.training.prefix_cache:
        return None
    caches = warm.WARM.get("prefix_caches", model_key(site.cfg, site.device), PrefixCaches)
    return caches.get(site.model, dataset, device=site.device, role=role)
