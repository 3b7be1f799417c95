"""Round overhead of signing + verification + SecAgg+ against plain FedAvg, at the coordinator and at a site.

    .venv/bin/python bench/security_overhead.py [--quick] [--repeats 5] [--clock cpu|wall] [--json FILE]

For 3, 10 and 30 sites (--quick: 3 and 10) and two adapter shapes, one round three ways, side by side in
one process, on the same site updates:

  plain    the coordinator reads each reply's arrays out of its packed record and takes FedAvg's
           example-weighted mean (`server.strategy.FedAvg.aggregate`). No checks at all: Flower's FedAvg.
  +sign    each site runs what `client.site.handle_train` runs after training: `common.adapter.hash_state`
           of its adapter (declared, and in the ledger), then `client.replies.seal_fields` (hash of the
           adapter sent and of the global one, Ed25519 over `common.sealing`'s payload). The coordinator
           admits every reply through its real gate, `server.gate.RoundGate.admit` (size limit,
           hash, `server.verify.UpdateVerifier` against a key registry, `validate_update` with the
           update's norm), then FedAvg.
  +secagg  +sign with SecAgg+ on the complete graph, driven as tests/server/test_secagg.py drives it:
           the coordinator's `server.secagg.SecAggRound` (key exchange, each masked vector's form and
           declaration through the same gate, unmasking) talks to each site's real handler
           (`client.site.handle_secagg`: X25519 keys, Shamir shares, AES-GCM); in the train step each
           site runs `client.secagg.accept_shares` and `mask_update` (clip, quantise, AES-CTR masks)
           and seals the masked vector. The result is checked against plain FedAvg (within one
           quantisation step), so the timed paths are the ones that work.

Coordinator figures exclude the sites' work: the in-process grid times each site handler it calls and
that time is subtracted. The site figures are one site's own work in the round (mean over the sites).
Every figure is the best of --repeats rounds; SecAgg keys are fresh each round, as in a federation.

Adapters (fp32, as sites send them), LoRA rank 8:
  demo  the demo's adapter (silo/demo.py): q/k/v/o of 4 layers at hidden 128, plus lm_head over the
        2048-token vocabulary: 50,176 params (bench/federation_cost.py reports the same count)
  base  q/k/v/o of a 12-layer, hidden-768 model (GPT-2/BERT-base shaped): 589,824 params

Measured: the real code paths in one process, as CPU time of the process (all its threads) by default
or elapsed time with --clock wall; no site dropping out (a site lost after key sharing costs the coordinator one
Shamir reconstruction and one mask per survivor more; not timed here).
Not measured: the network and Flower's messaging (serialisation of the records, gRPC, SuperLink queues:
bench/federation_cost.py measures a real federation), training, the sites working in parallel (each
site's figure is its own; in a federation they overlap), and the ledger's own signature (paid with or
without these protections).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flwr.app import ConfigRecord, Context, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import format_table, git_commit, machine  # noqa: E402
from client.replies import seal_fields  # noqa: E402
from client.secagg import accept_shares, mask_update  # noqa: E402
from client.site import handle_secagg  # noqa: E402
from common.adapter import arrays_to_state, hash_state, numpy_to_state, state_to_arrays  # noqa: E402
from common.arrays import Arrays  # noqa: E402
from common.config import SecAggSection, SecuritySection  # noqa: E402
from common.declaration import PrivacyDeclaration, ScrubReport, SiteDeclaration  # noqa: E402
from common.keys import generate_signing_key  # noqa: E402
from server.gate import RoundGate  # noqa: E402
from server.secagg import SecAggRound  # noqa: E402
from server.strategy import FedAvg, SiteUpdate  # noqa: E402
from server.verify import Registry, UpdateVerifier  # noqa: E402

RANK = 8  # LoRA rank of both adapters (the demo's `[lora] r`)
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
RUN_ID = "bench-security"
# Each site's delta w_k - w has this L2 norm: inside SecAgg's default clip of 1.0, so clipping changes
# nothing and the SecAgg result can be checked against plain FedAvg.
DELTA_NORM = 0.5
TIMEOUT_S = 60.0  # the grid answers at once; only the signature of SecAggRound needs it


# What the timers read: the process's CPU time (all its threads: Flower's Shamir sharing uses a thread
# pool) by default, which other work on a shared machine barely moves; `--clock wall` for elapsed time.
CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.process_time, "wall": time.perf_counter}
_clock = [CLOCKS["cpu"]]


def clock() -> float:
    return _clock[0]()


def lora_shapes(*, layers: int, hidden: int, lm_head_vocab: int = 0) -> dict[str, tuple[int, int]]:
    """PEFT's saved keys and shapes: A [r, in], B [out, r] per adapted module."""
    out: dict[str, tuple[int, int]] = {}
    for layer in range(layers):
        for module in ATTENTION:
            base = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            out[f"{base}.lora_A.weight"] = (RANK, hidden)
            out[f"{base}.lora_B.weight"] = (hidden, RANK)
    if lm_head_vocab:
        out["base_model.model.lm_head.lora_A.weight"] = (RANK, hidden)
        out["base_model.model.lm_head.lora_B.weight"] = (lm_head_vocab, RANK)
    return out


ADAPTERS = {
    # silo/demo.py: DEMO_HIDDEN_SIZE 128, build_base_model's 4 layers and 2048-token vocabulary.
    "demo": lora_shapes(layers=4, hidden=128, lm_head_vocab=2048),
    "base": lora_shapes(layers=12, hidden=768),
}


def params_of(shapes: dict[str, tuple[int, int]]) -> int:
    return sum(a * b for a, b in shapes.values())


@dataclass
class Site:
    node: int
    site_id: str
    key: Ed25519PrivateKey
    trained: Arrays
    weight: int  # examples trained on: FedAvg's weight, SecAgg's multiplier
    context: Any  # the SuperNode's flwr Context; SecAgg secrets live in its state


def make_sites(n: int, global_arrays: Arrays, rng: np.random.Generator) -> list[Site]:

    sites = []
    for node in range(1, n + 1):
        delta = {k: rng.standard_normal(v.shape) for k, v in global_arrays.items()}
        norm = np.sqrt(sum(float((d**2).sum()) for d in delta.values()))
        trained = {k: (v + delta[k] * DELTA_NORM / norm).astype(v.dtype) for k, v in global_arrays.items()}
        context = Context(run_id=1, node_id=node, node_config={}, state=RecordDict(), run_config={})
        sites.append(Site(node, f"site-{node:02d}", generate_signing_key(), trained, 40 + 7 * node, context))
    return sites


def metrics_of(site: Site, rnd: int) -> dict[str, Any]:
    return {"num-examples": site.weight, "steps": 10, "server-round": rnd}


def declared(site: Site, **extra: str) -> ConfigRecord:
    """The site's declaration as `client.replies.declaration_record` builds it (common/declaration.py), with a
    plausible DP round; the gate checks its schema and that `num-examples` fits `dataset_size`."""
    dp_round = {"dp_enabled": True, "noise_multiplier": 1.0, "sample_rate": 0.1, "steps": 10, "max_grad_norm": 1.0}
    spent = {"delta": 1e-5, "accountant": "rdp", "conversion": "balle2020", "epsilon_round": 1.0}
    totals = {"epsilon_total": 1.0, "budget_epsilon": 10.0, "dataset_size": site.weight, "noise_source": "os-seeded"}
    privacy = PrivacyDeclaration(**dp_round, **spent, **totals)
    declaration = SiteDeclaration(
        site_id=site.site_id,
        update_sha256=hash_state(numpy_to_state(site.trained)),
        scrub_report=ScrubReport(records_in=site.weight, quarantined=0, entities={}),
        privacy=privacy,
    )
    return ConfigRecord({**declaration.to_record(), **extra})


def reply_of(site: Site, sent: Arrays, declarations: Any, metrics: dict[str, Any]) -> SimpleNamespace:
    """The train reply as the coordinator receives it (built outside the timers: that is messaging)."""

    content = RecordDict(
        {"arrays": state_to_arrays(numpy_to_state(sent)), "metrics": MetricRecord(metrics), "site": declarations}
    )
    return SimpleNamespace(content=content, metadata=SimpleNamespace(src_node_id=site.node), has_error=lambda: False)


def seal_reply_fields(site: Site, *, rnd: int, sent: Arrays, global_arrays: Arrays, declarations: Any) -> None:
    """What client.site.handle_train does to seal `sent`: the same calls, in the same order."""

    declarations.update(
        seal_fields(
            site.key,
            run_id=RUN_ID,
            round=rnd,
            site_id=site.site_id,
            update_sha256=hash_state(numpy_to_state(sent)),
            global_sha256=hash_state(numpy_to_state(global_arrays)),
            metrics=metrics_of(site, rnd),
            declarations=declarations,
        )
    )


class TimedGrid:
    """Flower's Grid for `SecAggRound`: each query goes to the site's real `handle_secagg`, timed."""

    def __init__(self, sites: list[Site]) -> None:
        self.sites = {s.node: s for s in sites}
        self.site_s: dict[str, dict[int, float]] = {}  # stage -> node -> seconds
        self.inside_s = 0.0  # all site time so far, to take out of the coordinator's

    def get_node_ids(self) -> list[int]:
        return list(self.sites)

    def send_and_receive(self, messages: list[Any], timeout: float) -> list[Any]:
        replies = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            stage = str(msg.content["secagg"]["stage"])
            t0 = clock()
            reply = handle_secagg(msg, self.sites[node].context)
            spent = clock() - t0
            self.inside_s += spent
            self.site_s.setdefault(stage, {})[node] = self.site_s.get(stage, {}).get(node, 0.0) + spent
            if reply.has_error():
                raise RuntimeError(f"site {node} failed secagg stage {stage}: {reply.error.reason}")
            replies.append(reply)
        return replies


@dataclass
class Round:
    """One round's timings in seconds: coordinator stages, and per-site stages (mean over sites)."""

    coordinator: dict[str, float] = field(default_factory=dict)
    site: dict[str, float] = field(default_factory=dict)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = clock()
    out = fn()
    return out, clock() - t0


def plain_round(replies: list[SimpleNamespace], global_arrays: Arrays) -> tuple[Arrays, float]:

    def run() -> Arrays:
        updates = [
            SiteUpdate(
                node_id=r.metadata.src_node_id,
                site_id=str(r.content["site"]["site-id"]),
                arrays={k: v.numpy() for k, v in arrays_to_state(r.content.config_records["arrays"]).items()},
                num_examples=int(r.content.metric_records["metrics"]["num-examples"]),
            )
            for r in replies
        ]
        return FedAvg().aggregate(global_arrays, updates)

    return timed(run)


def signed_round(sites: list[Site], global_arrays: Arrays, verifier: Any, rnd: int) -> tuple[list, Arrays, Round]:
    """Sites seal their adapters; the coordinator admits each through RoundGate, then FedAvg."""

    timing, replies, site_s = Round(), [], []
    for s in sites:
        t0 = clock()
        declarations = declared(s)
        seal_reply_fields(s, rnd=rnd, sent=s.trained, global_arrays=global_arrays, declarations=declarations)
        site_s.append(clock() - t0)
        replies.append(reply_of(s, s.trained, declarations, metrics_of(s, rnd)))
    timing.site["seal"] = float(np.mean(site_s))

    def run() -> Arrays:
        gate = RoundGate(verifier, SecuritySection(), RUN_ID, rnd, global_arrays)
        updates = [gate.admit(r) for r in replies]
        return FedAvg().aggregate(global_arrays, updates)

    out, timing.coordinator["admit+fedavg"] = timed(run)
    return replies, out, timing


def secagg_round(sites: list[Site], global_arrays: Arrays, verifier: Any, rnd: int) -> tuple[Arrays, Round]:
    """Key exchange, masked training replies, admission and unmasking: the coordinator's and sites' real code."""

    grid, timing, n = TimedGrid(sites), Round(), len(sites)
    cfg = SecAggSection(enabled=True)

    t0, inside0 = clock(), grid.inside_s
    secagg = SecAggRound(cfg, RUN_ID, rnd)
    gate = RoundGate(verifier, SecuritySection(), RUN_ID, rnd, global_arrays, secagg=secagg)
    secagg.exchange_keys(grid, [s.node for s in sites], min_sites=n, timeout=TIMEOUT_S)
    train_records = {node: secagg.train_record(node) for node in secagg.sharing}
    timing.coordinator["keys"] = clock() - t0 - (grid.inside_s - inside0)

    replies, site_s = [], []
    for s in sites:
        t0 = clock()
        accept_shares(s.context.state, train_records[s.node])
        masked, declaration = mask_update(
            s.context.state, update=s.trained, global_arrays=global_arrays, weight=s.weight
        )
        declarations = declared(s, secagg=json.dumps(declaration, sort_keys=True))
        seal_reply_fields(s, rnd=rnd, sent=masked, global_arrays=global_arrays, declarations=declarations)
        site_s.append(clock() - t0)
        replies.append(reply_of(s, masked, declarations, metrics_of(s, rnd)))

    t0 = clock()
    accepted = [gate.admit(r) for r in replies]
    timing.coordinator["admit"] = clock() - t0

    t0, inside0 = clock(), grid.inside_s
    mean_delta, _ = secagg.unmask(
        grid,
        {u.node_id: u.arrays for u in accepted},
        {u.node_id: u.num_examples for u in accepted},
        min_sites=n,
        timeout=TIMEOUT_S,
    )
    combined = {k: (w.astype(np.float64) + mean_delta[k]).astype(w.dtype) for k, w in global_arrays.items()}
    out = FedAvg().aggregate_combined(global_arrays, combined)
    timing.coordinator["unmask"] = clock() - t0 - (grid.inside_s - inside0)

    per_stage = {stage: float(np.mean(list(by_node.values()))) for stage, by_node in grid.site_s.items()}
    timing.site["keys"] = per_stage.get("setup", 0.0) + per_stage.get("share-keys", 0.0)
    timing.site["mask+seal"] = float(np.mean(site_s))
    timing.site["reveal"] = per_stage.get("unmask", 0.0)
    return out, timing


def measure(n: int, adapter: str, repeats: int, seed: int) -> dict[str, Any]:

    rng = np.random.default_rng(seed)
    shapes = ADAPTERS[adapter]
    global_arrays = {k: (0.02 * rng.standard_normal(s)).astype(np.float32) for k, s in shapes.items()}
    sites = make_sites(n, global_arrays, rng)
    registry = Registry(keys={s.site_id: s.key.public_key() for s in sites}, sha256="bench")
    verifier = UpdateVerifier(registry=registry)
    step = 2.0 * 1.0 / (1 << 22)  # SecAggSection defaults: clip 1.0, quantization_range 2^22

    best: dict[str, float] = {}

    def keep(name: str, seconds: float) -> None:
        best[name] = min(best.get(name, float("inf")), seconds)

    for rep in range(repeats):
        rnd = rep + 1
        # As timeit does: no cyclic garbage collection inside a timed round (a full pass over torch's
        # objects would land in whichever stage it happened to interrupt).
        gc.collect()
        gc.disable()
        try:
            replies, signed, signed_t = signed_round(sites, global_arrays, verifier, rnd)
            plain, plain_s = plain_round(replies, global_arrays)
            del replies
            gc.collect()
            secure, secure_t = secagg_round(sites, global_arrays, verifier, rnd)
        finally:
            gc.enable()
        error = max(float(np.abs(secure[k].astype(np.float64) - plain[k].astype(np.float64)).max()) for k in plain)
        # Rounding of each coordinate, plus float32 storage of the result.
        if error > step + 1e-6 or any(not np.array_equal(signed[k], plain[k]) for k in plain):
            raise RuntimeError(f"{n} sites, {adapter}: aggregates differ (SecAgg vs FedAvg max error {error:.3g})")
        keep("plain", plain_s)
        # RoundGate.admit reads the arrays itself: the signed round holds the plain round's work whole.
        keep("signed", signed_t.coordinator["admit+fedavg"])
        keep("secagg", sum(secure_t.coordinator.values()))
        keep("site_seal", signed_t.site["seal"])
        keep("site_secagg", sum(secure_t.site.values()))
        for k, v in secure_t.coordinator.items():
            keep(f"secagg_coordinator_{k}", v)
        for k, v in secure_t.site.items():
            keep(f"secagg_site_{k}", v)
    return {"sites": n, "adapter": adapter, "params": params_of(shapes), **best}


def load_average() -> str:
    """Other work on the machine slows the wall clock (and, less, the CPU clock): say how much there was."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 and 10 sites only")
    ap.add_argument("--sites", type=int, nargs="+", default=[3, 10, 30])
    ap.add_argument("--adapters", nargs="+", choices=sorted(ADAPTERS), default=["demo", "base"])
    ap.add_argument("--repeats", type=int, default=5, help="rounds per configuration; the best is reported")
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="cpu", help="what a figure measures (default: CPU time)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error(f"--repeats must be >= 1, got {args.repeats}")
    sites = [n for n in args.sites if n <= 10] if args.quick else args.sites
    if any(n < 2 for n in sites):
        ap.error(f"SecAgg needs at least 2 sites, got --sites {args.sites}")

    # Set by Flower in a real ServerApp process; building messages reads it.
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1

    _clock[0] = CLOCKS[args.clock]
    # One small untimed round first: lazy imports and first-use set-up of the crypto libraries.
    measure(2, "demo", 1, args.seed)
    started = time.perf_counter()
    rows = []
    for adapter in args.adapters:
        for n in sites:
            row = measure(n, adapter, args.repeats, args.seed)
            rows.append(row)
            print(f"  {n} sites, {adapter} adapter: done ({time.perf_counter() - started:.0f} s)", file=sys.stderr)

    print(f"\nSecurity overhead per round — machine: {machine()}; commit {git_commit()}")
    print(
        f"in-process, no network; {args.clock} time, best of {args.repeats} rounds per figure; coordinator time "
        f"excludes the sites'; site = one site's own work (mean over sites); load average {load_average()}\n"
    )
    ms = 1e3
    print(
        format_table(
            [
                "sites",
                "adapter params",
                "plain FedAvg ms",
                "+sign/verify ms",
                "(x plain)",
                "+SecAgg ms",
                "(x plain)",
                "site sign ms",
                "SecAgg per-site ms",
            ],
            [
                (
                    r["sites"],
                    f"{r['params']:,} ({r['adapter']})",
                    f"{r['plain'] * ms:.2f}",
                    f"{r['signed'] * ms:.2f}",
                    f"{r['signed'] / r['plain']:.1f}x",
                    f"{r['secagg'] * ms:.1f}",
                    f"{r['secagg'] / r['plain']:.1f}x",
                    f"{r['site_seal'] * ms:.2f}",
                    f"{r['site_secagg'] * ms:.1f}",
                )
                for r in rows
            ],
        )
    )
    print("\nWhere SecAgg's time goes (ms): coordinator stages, then one site's")
    print(
        format_table(
            [
                "sites",
                "adapter",
                "coord keys",
                "coord admit",
                "coord unmask",
                "site keys",
                "site mask+seal",
                "site reveal",
            ],
            [
                (
                    r["sites"],
                    r["adapter"],
                    f"{r['secagg_coordinator_keys'] * ms:.1f}",
                    f"{r['secagg_coordinator_admit'] * ms:.1f}",
                    f"{r['secagg_coordinator_unmask'] * ms:.1f}",
                    f"{r['secagg_site_keys'] * ms:.1f}",
                    f"{r['secagg_site_mask+seal'] * ms:.1f}",
                    f"{r['secagg_site_reveal'] * ms:.2f}",
                )
                for r in rows
            ],
        )
    )
    print(
        "\nplain: read arrays + FedAvg; +sign/verify: RoundGate.admit (hash, Ed25519, form, norm) + FedAvg, sites "
        "hash and sign; +SecAgg: key exchange, masked replies through the gate, unmasking; the site's SecAgg "
        "figure includes its sealing. Messaging: bench/federation_cost.py."
    )
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(
            json.dumps({"machine": machine(), "commit": git_commit(), "repeats": args.repeats, "rows": rows}, indent=2)
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
