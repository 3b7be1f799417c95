"""What the benchmarks share (named so it cannot shadow the project's `common` package for scripts run from
bench/): the machine they ran on, the git commit, aligned tables, site and federation TOMLs, and an in-process
stand-in for Flower's Grid that runs the coordinator's real round loop against the sites' real handlers.

`InProcessGrid` replaces only the transport. `server.federation.run_federation` (strategy, checkpoint,
manifest, secure aggregation) runs unchanged and each message goes to the handler the ClientApp registers
for its type (`client.site.handle_train` / `handle_evaluate`: ingest, scrub, tokenize, DP-SGD, signed
ledger; `handle_secagg`; `client.handshake.handle_handshake`) with a Flower `Context` per site, as a
SuperNode would call them.
What it does not do: separate processes, gRPC serialisation, sites training in parallel.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Real data lives beside the repository, never inside it (see ../shared/data/README.md).
SHARED_DATA = REPO.parent / "shared" / "data"


def machine() -> str:
    """One line: OS, CPU model, cores, memory, GPU (if any), torch and Python versions."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kib = int(
            next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal")).split()[1]
        )
        mem = f", {kib / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
        torch_v = f"torch {torch.__version__}"
    except ImportError:
        gpu, torch_v = "torch missing", ""
    return (
        f"{platform.system()} {platform.release()}; {cpu}; {os.cpu_count()} cores{mem}; {gpu}; {torch_v}; "
        f"Python {platform.python_version()}"
    )


def git_commit() -> str:
    """HEAD's short hash, with `+dirty` when tracked files differ from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def format_table(header: Sequence[str], rows: Iterable[Sequence[Any]], *, markdown: bool = False) -> str:
    """Columns aligned to their widest cell (plain), or a GitHub markdown table."""
    cells = [[str(h) for h in header]] + [[_cell(c) for c in row] for row in rows]
    if markdown:
        lines = ["| " + " | ".join(cells[0]) + " |", "|" + "|".join("---" for _ in header) + "|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in cells[1:]])
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


class InProcessGrid:
    """The two Grid calls `server.federation` makes, answered by the site handlers in this process."""

    def __init__(self, site_configs: Sequence[Path]) -> None:
        from flwr.app import Context, RecordDict
        from flwr.supercore.task_identity import TaskIdentity

        # What a ServerApp process is told by its SuperLink; Message() reads it for the metadata.
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
        # Node ids as a SuperLink would hand out: arbitrary positive integers, one per site.
        self.contexts = {
            1000 + i: Context(
                run_id=1,
                node_id=1000 + i,
                node_config={"site-config": str(Path(p).resolve())},
                state=RecordDict(),
                run_config={},
            )
            for i, p in enumerate(site_configs)
        }
        # Each site keeps its own warm state (client/warm.py: model, scrubbed records, prefix caches), as each
        # site's node process does; one shared WarmSite would evict a site's records at every other site's turn.
        from client.warm import WarmSite

        self.warm = {node: WarmSite() for node in self.contexts}
        self._pending: list[Any] = []  # replies pushed and not pulled yet
        # The run's app bundle, which the coordinator's signed run request names; in process there is none,
        # and the site handlers are called directly (the executor's bundle check is not on this path).
        self.run = SimpleNamespace(fab_hash=hashlib.sha256(b"silo in-process benchmark").hexdigest())

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def send_and_receive(self, messages: Iterable[Any], *, timeout: float | None = None) -> list[Any]:
        from flwr.app import MessageType

        import client.warm
        from client.handshake import handle_handshake
        from client.site import handle_evaluate, handle_secagg, handle_train
        from common.run_request import HANDSHAKE_MESSAGE_TYPE
        from server.secagg import MESSAGE_TYPE as SECAGG_MESSAGE_TYPE

        # client/app.py's routes: train, evaluate, and the two queries (handshake, secure aggregation's stages).
        handlers = {
            MessageType.TRAIN: handle_train,
            MessageType.EVALUATE: handle_evaluate,
            HANDSHAKE_MESSAGE_TYPE: handle_handshake,
            SECAGG_MESSAGE_TYPE: handle_secagg,
        }
        replies = []
        for msg in messages:
            handler = handlers.get(msg.metadata.message_type)
            if handler is None:
                raise ValueError(f"no site handler for message type {msg.metadata.message_type!r}")
            client.warm.WARM = self.warm[msg.metadata.dst_node_id]  # this site's node state, as in its process
            replies.append(handler(msg, self.contexts[msg.metadata.dst_node_id]))
        return replies

    def push_messages(self, messages: Iterable[Any]) -> list[str]:
        """Answered at once (server/exchange.py's PromptGrid pushes, then pulls until every reply is in)."""
        replies = self.send_and_receive(messages)
        self._pending += replies
        return [r.metadata.reply_to_message_id for r in replies]

    def pull_messages(self, message_ids: Iterable[str]) -> list[Any]:
        wanted = set(message_ids)
        out = [r for r in self._pending if r.metadata.reply_to_message_id in wanted]
        self._pending = [r for r in self._pending if r.metadata.reply_to_message_id not in wanted]
        return out


# ---- site and federation TOMLs, a run, its final adapter -----------------------------------------------------


def privacy_config(
    epsilon: float | None,
    *,
    rounds: int,
    delta: float = 1e-5,
    max_grad_norm: float = 1.0,
    distributed_min_honest: int | None = None,
) -> Any:
    """`[privacy]` (a PrivacyConfig): DP-SGD with sigma derived from (epsilon, delta) over `rounds`, or DP off
    (epsilon None). `distributed_min_honest` t: distributed noise instead (`noise = "distributed"`, one
    DP-FedSGD step a round, the budget on the "sum" figure: against a coordinator that sees only the SecAgg
    sum of t honest sites' shares)."""
    import math
    import warnings

    from common.config import PrivacyConfig

    if epsilon is None:
        # DP off must be acknowledged with an infinite budget (the ledger records epsilon = inf). The site
        # warns when it loads its TOML; building the config here is not that moment.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return PrivacyConfig(enabled=False, max_grad_norm=1.0, budget_epsilon=math.inf, budget_delta=1e-5)
    from common.accounting import BudgetFigure, NoiseModel

    distributed = distributed_min_honest is not None
    return PrivacyConfig(
        max_grad_norm=max_grad_norm,
        target_epsilon=epsilon,
        target_delta=delta,
        planned_rounds=rounds,
        budget_epsilon=epsilon,
        budget_delta=delta,
        noise=NoiseModel.DISTRIBUTED if distributed else NoiseModel.LOCAL,
        distributed_min_honest=distributed_min_honest if distributed else PrivacyConfig.distributed_min_honest,
        distributed_budget=BudgetFigure.SUM,
    )


@dataclass(frozen=True)
class FedSGDSchedule:
    """What a DP row runs instead of its bench's multi-epoch recipe: DP-FedSGD, one step of plain SGD a round
    (`[training] epochs = 1`, `optimizer = "sgd"`; `probe_rounds` 0). A distributed-noise row (README "Two
    trust models"; client/site.py `train_distributed`) always trains so; a local-noise row does when its bench
    gives it a schedule. Every round trains the adapter and head together, from the prefix cache's states
    when `[training] prefix_cache` holds."""

    rounds: int
    batch_size: int  # expected records a site's Poisson draw takes per round (q = batch / training records)
    learning_rate: float  # plain SGD on the sites' averaged clipped per-record gradients (no optimiser state)
    eval_noise_multiplier: float  # each round's hold-out answer: rounds + 1 of them share the budget
    # `[lora] alpha` of the rows on this schedule (None: the bench's own). One SGD rate serves every parameter; a
    # smaller alpha scales LoRA's gradients, and a step's effect on the layer, down with it.
    lora_alpha: float | None = None
    # `[lora] ffa` of the rows on this schedule: A stays at its seeded start, so the noise moves B alone and the
    # layer's change B A stays on A's one direction.
    ffa: bool = False


# Secure aggregation for distributed rows: README's advice for distributed noise, a grid of 2 / 2^28 (clip 1),
# so one record's step is ~1e5 integers and rounding adds < 1% to its sensitivity; the other settings default.
DISTRIBUTED_SECAGG_RANGE = 1 << 28


def add_distributed_overrides(ap: argparse.ArgumentParser) -> None:
    """`--distributed-rounds`, `--distributed-batch-size`, `--distributed-learning-rate`: each, when given,
    replaces its FedSGDSchedule value (`override_distributed`) for the dist rows only."""
    ap.add_argument("--distributed-rounds", type=int, help="override the distributed rows' rounds")
    ap.add_argument("--distributed-batch-size", type=int, help="override the distributed rows' expected batch")
    ap.add_argument("--distributed-learning-rate", type=float, help="override the distributed rows' SGD rate")
    ap.add_argument("--distributed-lora-alpha", type=float, help="override the distributed rows' [lora] alpha")


def override_distributed(d: FedSGDSchedule, args: argparse.Namespace) -> FedSGDSchedule:
    return replace(
        d,
        rounds=args.distributed_rounds or d.rounds,
        batch_size=args.distributed_batch_size or d.batch_size,
        learning_rate=args.distributed_learning_rate or d.learning_rate,
        lora_alpha=args.distributed_lora_alpha or d.lora_alpha,
    )


def distributed_schedule(schedules: Mapping[float, FedSGDSchedule], epsilon: float) -> FedSGDSchedule:
    """The distributed row's schedule at target `epsilon` (per site, the "sum" figure) from `schedules`."""
    if epsilon not in schedules:
        known = ", ".join(f"{e:g}" for e in sorted(schedules))
        raise ValueError(f"`distributed` has no schedule for eps={epsilon:g} (it has eps {known})")
    return schedules[epsilon]


def describe_schedule(d: FedSGDSchedule, *, lora_r: int) -> str:
    """One line: what a row on a DP-FedSGD schedule ran (its output and RESULTS name it)."""
    alpha = 2 * lora_r if d.lora_alpha is None else d.lora_alpha
    return (
        f"{d.rounds} rounds x 1 DP-FedSGD step, expected batch {d.batch_size} a site, SGD lr {d.learning_rate:g}, "
        f"LoRA alpha {alpha:g}{' (FFA)' if d.ffa else ''}, eval sigma {d.eval_noise_multiplier:g}"
    )


def override_distributed_schedules(
    schedules: Mapping[float, FedSGDSchedule], args: argparse.Namespace
) -> dict[float, FedSGDSchedule]:
    """`schedules` (one per target epsilon) with the `--distributed-*` options given applied to each."""
    return {eps: override_distributed(d, args) for eps, d in schedules.items()}


@dataclass(frozen=True)
class ModelSections:
    """`[model] [lora] [task]`, identical in the site and federation TOMLs (ModelConfig, LoraSettings,
    TaskConfig)."""

    model: Any
    lora: Any
    task: Any


def model_sections(
    *,
    base: str | Path,
    max_length: int,
    lora_r: int,
    lora_alpha: float,
    targets: Sequence[str],
    task: Any = None,
    ffa: bool = False,
) -> ModelSections:
    """The base model, LoRA on `targets` (`ffa`: A frozen), and `task` (a TaskConfig; None: causal LM)."""
    from common.config import LoraSettings, ModelConfig, TaskConfig

    return ModelSections(
        model=ModelConfig(base=str(base), max_length=max_length),
        lora=LoraSettings(r=lora_r, alpha=lora_alpha, dropout=0.0, target_modules=tuple(targets), ffa=ffa),
        task=TaskConfig() if task is None else task,
    )


def classification_task(labels: Sequence[str], *, pooling: str = "model", head_init: str = "random") -> Any:
    """`[task]` (a TaskConfig) of a classifier over `labels`."""
    from common.config import HeadInit, Pooling, TaskConfig, TaskType

    return TaskConfig(
        type=TaskType.CLASSIFICATION, labels=tuple(labels), pooling=Pooling(pooling), head_init=HeadInit(head_init)
    )


def write_site_toml(
    site_dir: Path, site_id: str, *, model: ModelSections, data: Any = None, training: Any, privacy: Any
) -> Path:
    """`site_dir/site.toml`; its records go in `site_dir/data/`, its ledger and key in `site_dir/state/`.
    `data` (a DataConfig; None: the defaults), `training` (a TrainingConfig), `privacy` (privacy_config)."""
    from common.config import DataConfig, SiteConfig, SiteSection

    site_dir.mkdir(parents=True, exist_ok=True)
    path = site_dir / "site.toml"
    config = SiteConfig(
        site=SiteSection(id=site_id, state_dir="state"),
        data=DataConfig(dir="data") if data is None else data,
        task=model.task,
        model=model.model,
        lora=model.lora,
        training=training,
        privacy=privacy,
    )
    path.write_text(config.to_toml())
    return path


def write_federation_toml(
    path: Path, *, model: ModelSections, rounds: int, min_sites: int, timeout_s: float = 3600.0, secagg: bool = False
) -> Path:
    """FedAvg over `rounds`; `secagg`: with secure aggregation on a `DISTRIBUTED_SECAGG_RANGE` grid."""
    from common.config import FederationConfig, FederationSection, SecAggSection, StrategyName

    federation = FederationSection(
        rounds=rounds, min_sites=min_sites, strategy=StrategyName.FEDAVG, round_timeout_s=timeout_s
    )
    config = FederationConfig(
        federation=federation,
        model=model.model,
        lora=model.lora,
        task=model.task,
        secagg=SecAggSection(enabled=True, quantization_range=DISTRIBUTED_SECAGG_RANGE) if secagg else SecAggSection(),
    )
    path.write_text(config.to_toml())
    return path


def run_federation_here(
    work: Path, site_configs: Sequence[Path], federation_config: Path, *, processes: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the federation; returns (manifest, final global adapter as numpy arrays).

    processes=True: SuperLink + one SuperNode per site as separate processes (silo.local_federation, as `silo demo`).
    processes=False: the same coordinator loop and site handlers in this process (`InProcessGrid`)."""
    from server.checkpoint import RunDirectory

    run_dir = work / "run"
    if processes:
        from silo.local_federation import LocalFederation
        from silo.run_progress import follow_run

        with LocalFederation(work / "processes", list(site_configs)) as fed:
            run_id = fed.submit({"silo-config": str(federation_config), "run-dir": str(run_dir)})
            manifest = follow_run(fed.connection, run_id, run_dir, timeout=6 * 3600, log=sys.stderr)
    else:
        from common.config import load_federation_config
        from server.federation import run_federation

        manifest = run_federation(
            InProcessGrid(site_configs), load_federation_config(federation_config), str(run_dir)
        ).manifest
    run = RunDirectory(run_dir, manifest)
    arrays, _ = run.load_round(run.completed_rounds)
    return manifest, arrays


def last_round_privacy(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Each site's privacy declaration of the run's last training round, from the manifest."""
    last = max((r for r in manifest["rounds"] if r.get("kind") == "train"), key=lambda r: r["round"])
    return [s.get("privacy", {}) for s in last["sites"]]


def spent_epsilon(manifest: dict[str, Any]) -> tuple[float, float]:
    """(largest epsilon any site has spent after the last round, its noise multiplier), from the manifest."""
    privacy = last_round_privacy(manifest)
    eps = max(float(p.get("epsilon_total") or 0.0) for p in privacy) if privacy else float("nan")
    sigma = max(float(p.get("noise_multiplier") or 0.0) for p in privacy) if privacy else float("nan")
    return eps, sigma


def distributed_epsilons(manifest: dict[str, Any]) -> tuple[float, float]:
    """(largest "sum" epsilon, largest "own-noise" epsilon) any site has spent after the last round: the two
    figures its ledger entry records for a distributed round, as the manifest carries them."""
    figures = [p["distributed"] for p in last_round_privacy(manifest)]
    return (
        max(float(d["epsilon_total_sum"]) for d in figures),
        max(float(d["epsilon_total_own"]) for d in figures),
    )


def evaluate_adapter(
    arrays: dict[str, Any], *, federation_toml: Path, records: list[dict[str, Any]], data: Any, batch_size: int = 64
) -> Any:
    """`client.train.evaluate` of a global adapter on records no site holds, scrubbed as a site scrubs them
    (tokenization accepts nothing else), on the federation's base model and task."""
    from client.prepare import encode_records
    from client.scrub import build_scrubber, scrub_records
    from client.train import evaluate
    from common.adapter import load_adapter_state, numpy_to_state
    from common.config import TaskType, load_federation_config
    from common.config.scrub import ScrubConfig
    from common.model import load_lora_model, load_tokenizer, resolve_device

    cfg = load_federation_config(federation_toml)
    device = resolve_device("auto")
    model = load_lora_model(cfg.model_source(), cfg.lora, cfg.task, device=device)
    load_adapter_state(model, numpy_to_state(arrays))
    fields = (
        (data.text_field,) if cfg.task.type is TaskType.CLASSIFICATION else (data.prompt_field, data.response_field)
    )
    scrubbed = scrub_records(records, build_scrubber(ScrubConfig(fields=fields)))
    tokenizer = load_tokenizer(cfg.model_source())
    ds = encode_records(scrubbed.records, tokenizer, data=data, task=cfg.task, max_length=cfg.model.max_length)
    return evaluate(model, ds, task=cfg.task, device=device, batch_size=batch_size)


# ---- a utility bench's rows (bench/utility_banking77.py, bench/perplexity_medquad.py) -------------------------


def add_schedule_overrides(
    ap: argparse.ArgumentParser,
    *,
    batch: str = "the settings' batch size",
    learning_rate: str = "the settings' learning rate",
) -> None:
    """`--rounds`, `--records-per-site`, `--local-epochs`, `--batch-size`, `--learning-rate`: each, when given,
    replaces its settings' value (`override_schedule`). `batch`, `learning_rate`: what their help calls them."""
    ap.add_argument("--rounds", type=int, help="override the settings' rounds")
    ap.add_argument("--records-per-site", type=int, help="override the settings' records per site")
    ap.add_argument("--local-epochs", type=int, help="override the settings' local epochs per round")
    ap.add_argument("--batch-size", type=int, help=f"override {batch}")
    ap.add_argument("--learning-rate", type=float, help=f"override {learning_rate}")


def override_schedule(s: Any, args: argparse.Namespace, *, per_site: str, **more: Any) -> Any:
    """Settings `s` (a frozen dataclass) with `add_schedule_overrides`' options and `more` fields applied;
    `per_site` names its records-per-site field (0 there is a value, not "not given")."""
    given_per_site = args.records_per_site
    return replace(
        s,
        rounds=args.rounds or s.rounds,
        local_epochs=args.local_epochs or s.local_epochs,
        batch_size=args.batch_size or s.batch_size,
        learning_rate=args.learning_rate or s.learning_rate,
        **{per_site: getattr(s, per_site) if given_per_site is None else given_per_site},
        **more,
    )


@dataclass(frozen=True)
class Configuration:
    """One row of a utility bench: `key` (what `--only` names), `title`, its sites (each what the bench's
    `run_config` takes for one site), the target epsilon per site (None: DP off), and whether the noise is
    distributed (each site adds its share, SecAgg sums them) rather than local (each site adds all of it)."""

    key: str
    title: str
    sites: list[Any]
    epsilon: float | None
    distributed: bool = False


def configurations(
    sites: Sequence[Any],
    names: Sequence[str],
    *,
    everyone: Any,
    central: str,
    federated: str,
    epsilons: Sequence[float],
    single_epsilon: float,
) -> list[Configuration]:
    """Every row: `central` (one site holding `everyone`), `federated` (all of `sites`) without DP, at each of
    `epsilons` with local noise (dp*) and with distributed noise (dist*), and each site alone (named by
    `names`) at `single_epsilon`."""
    return [
        Configuration("central", f"{central}, non-private", [everyone], None),
        Configuration("federated", f"{federated}, non-private", list(sites), None),
        *[Configuration(f"dp{e:g}", f"{federated}, DP eps={e:g}", list(sites), e) for e in epsilons],
        *[
            Configuration(f"dist{e:g}", f"{federated}, distributed DP eps={e:g}", list(sites), e, distributed=True)
            for e in epsilons
        ],
        *[
            Configuration(f"single{i}", f"{name} alone, DP eps={single_epsilon:g}", [site], single_epsilon)
            for i, (name, site) in enumerate(zip(names, sites, strict=True))
        ],
    ]


def select_configurations(configs: Sequence[Configuration], only: Sequence[str] | None) -> list[Configuration]:
    """The rows `--only` names; without it, every row but the distributed ones (opt-in: `--only dist8`)."""
    return [c for c in configs if c.key in only] if only else [c for c in configs if not c.distributed]


def measure_all(
    measure: Callable[..., dict[str, Any]], work: Path, configs: Sequence[Configuration], *extra: Any, jobs: int
) -> list[dict[str, Any]]:
    """`measure(work, config, *extra)` of every configuration, `jobs` at once (each in its own process:
    configurations are independent and each is single-threaded)."""
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(measure, work, config, *extra) for config in configs]
        return [f.result() for f in futures]


def best_single_site(rows: list[dict[str, Any]], *, by: str, lowest: bool) -> list[dict[str, Any]]:
    """`rows` with the single-site rows replaced by the best of them on `by` (the lowest or the highest): what
    a site gets alone."""
    singles = [r for r in rows if r["config"].startswith("single")]
    if not singles:
        return rows
    best = (min if lowest else max)(singles, key=lambda r: r[by])
    return [r for r in rows if r not in singles] + [{**best, "title": f"best single site: {best['title']}"}]


def privacy_columns(manifest: dict[str, Any], config: Configuration) -> dict[str, Any]:
    """A row's `epsilon_spent` and `noise_multiplier` (None without DP), from the run's manifest; a distributed
    row's `epsilon_spent` is its budget's "sum" figure and `epsilon_own_noise` the site's own share's
    (`noise_multiplier` the counted sigma, in units of the rounded L2 sensitivity)."""
    spent, sigma = spent_epsilon(manifest)
    dp = config.epsilon is not None
    row = {"epsilon_spent": spent if dp else None, "noise_multiplier": sigma if dp else None}
    if config.distributed:
        row["epsilon_spent"], row["epsilon_own_noise"] = distributed_epsilons(manifest)
    return row


PRIVACY_HEADER = ("eps spent (max site)", "eps own-noise (distributed)", "sigma", "seconds")
"""The columns `privacy_cells` fills."""


def privacy_cells(row: dict[str, Any]) -> list[str]:
    """A row's ε spent (distributed rows: the "sum" figure, the budget's), its own-noise ε (distributed rows
    only), σ and seconds, as the tables print them."""
    own = row.get("epsilon_own_noise")
    return [
        f"{row['epsilon_spent']:.2f}" if row["epsilon_spent"] is not None else "inf (no DP)",
        f"{own:.2f}" if own is not None else "-",
        f"{row['noise_multiplier']:.3f}" if row["noise_multiplier"] else "-",
        f"{row['seconds']:.0f}",
    ]
