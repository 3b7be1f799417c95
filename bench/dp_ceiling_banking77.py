"""How close can DP-SGD at these sites get? Banking77 on frozen encoder features, for the goal's sake.

    .venv/bin/python bench/dp_ceiling_banking77.py [--schedules 4x2 5x4 10x4 20x4] [--json FILE]
    .venv/bin/python bench/dp_ceiling_banking77.py --distributed 30x3000 [--distributed-learning-rate 64]
    .venv/bin/python bench/dp_ceiling_banking77.py --distributed bench   (each epsilon's bench schedule)

An analysis aid, NOT Silo's pipeline (bench/utility_banking77.py is that): it answers "what is the best a
federated DP-SGD run could reach on these three sites?" in minutes instead of hours, by training only the
77-way head on frozen features, so that the encoder's forward pass is paid once.

Same data, sites and model as bench/utility_banking77.py: Banking77 train records dealt over 3 sites by
Dirichlet(0.5) (seed 0), each site's 20% hold-out chosen by Silo's own `client.ingest.split_records`
(records as read, not scrubbed: the real run's scrubber finds a few names and places in ~1% of them);
features from Silo's `common.model.load_base_model` (all-MiniLM-L6-v2, `pooling = "mean"`, the
`label_names` head as the starting point), max_length 40. Accuracy is on the union of the sites' hold-outs
(the test split is not read at all).

Training, per configuration: FedAvg over the 3 sites (weighted by records); at each site Poisson-sampled
batches (rate = Silo's `planned_sample_rate`), per-record gradients of the head clipped to norm 1,
Gaussian noise sigma * 1 added to their sum (sigma from Silo's `find_noise_multiplier`, RDP, delta 1e-5,
for all rounds x steps, exactly as a site derives it), Adam at 1e-2. "central" is one site holding every
site's training records, non-private. The per-record head gradient is computed in closed form
((softmax - onehot) outer feature), which is what Opacus' per-sample gradients give for a linear layer.

`--distributed ROUNDSxBATCH ...`: the distributed-noise rows instead (README "Two trust models";
client/distributed_dp.py): DP-FedSGD, one step a round, each site's Poisson sample at Silo's
`planned_sample_rate` for the expected batch, per-record gradients clipped, the site's SGD step with its
Skellam share (σ from the site's own planner: `plan_distributed_round` and
`PrivacyConfig.resolve_distributed_noise_multiplier`, t = every site, the "sum" figure, the rounds' hold-out
answers at the bench's eval sigma, the benchmark's SecAgg grid and adapter size), the coordinator's
unweighted mean of the steps handed to Silo's own strategy (FedAvg, or FedAdam with `--server fedadam`).
`dist-noiseless` is the same schedule without noise: what the number of steps alone allows.

    .venv/bin/python bench/dp_ceiling_banking77.py --features F --distributed 20x500 30x3000 \
        --distributed-learning-rate 32 64 --seeds 3 --only dist8 dist3 dist-noiseless

What it cannot see: LoRA inside the encoder (the real run trains r=1 on the top layer's values too) and
the encoder's features moving. On this data the real pipeline measured a few points BELOW these figures,
so read them as an upper estimate for DP-SGD with this encoder.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from bench.harness import SHARED_DATA, format_table, git_commit, machine  # noqa: E402
from bench.utility_banking77 import (  # noqa: E402
    DELTA,
    DIRICHLET_ALPHA,
    EPSILONS,
    SITES,
    SPLIT_SEED,
    dirichlet_split,
    encoder_dir,
    read_banking77,
)

MAX_LENGTH = 40
BATCH_SIZE = 256
LEARNING_RATE = 1e-2
MAX_GRAD_NORM = 1.0


def site_features(encoder: Path, labels: list[str], sites: list[list[dict[str, str]]]) -> dict[str, Any]:
    """Frozen mean-pooled features of every site's training and hold-out records, and the round-0 head."""
    from client.ingest import split_records
    from common.config import TaskConfig, TaskType
    from common.model import MEAN_POOLING_SCALE, load_base_model, load_tokenizer

    task = TaskConfig(type=TaskType.CLASSIFICATION, labels=tuple(labels), pooling="mean", head_init="label_names")
    model = load_base_model(str(encoder), task).eval()
    tokenizer = load_tokenizer(str(encoder))
    index = {name: i for i, name in enumerate(labels)}

    @torch.no_grad()
    def encode(records: list[dict[str, str]]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = []
        for i in range(0, len(records), 256):
            enc = tokenizer(
                [r["text"] for r in records[i : i + 256]],
                padding=True,
                truncation=True,
                max_length=MAX_LENGTH,
                return_tensors="pt",
            )
            rows.append(MEAN_POOLING_SCALE * model.embed(enc["input_ids"], enc["attention_mask"]))
        return torch.cat(rows), torch.tensor([index[r["category"]] for r in records])

    train, holdout = [], []
    for recs in sites:
        split = split_records(recs, holdout_fraction=0.2, seed=0)  # a site's [data] defaults
        train.append(encode(split.train))
        holdout.append(encode(split.holdout))
    return {
        "train": train,
        "holdout": (torch.cat([x for x, _ in holdout]), torch.cat([y for _, y in holdout])),
        "head": (model.classifier.weight.detach().clone(), model.classifier.bias.detach().clone()),
    }


def local_training(
    head: tuple[torch.Tensor, torch.Tensor],
    data: tuple[torch.Tensor, torch.Tensor],
    *,
    epochs: int,
    plan: tuple[float, int],
    sigma: float | None,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One site's round: `epochs` passes of (DP-)SGD on the head; sigma None = non-private, no clipping.
    `plan` is the site's (Poisson sample rate, steps per round), as `site_plan` gives it."""
    x_all, y_all = data
    n = len(y_all)
    weight, bias = (t.clone().requires_grad_(True) for t in head)
    optimizer = torch.optim.Adam([weight, bias], lr=LEARNING_RATE)
    rate, steps = plan
    per_epoch = steps // epochs
    for step in range(steps):
        if sigma is None:  # shuffled batches, a new order each epoch, as a non-private site's DataLoader
            if step % per_epoch == 0:
                perm = torch.randperm(n, generator=generator)
            take = perm[(step % per_epoch) * BATCH_SIZE :][:BATCH_SIZE]
        else:  # Poisson sampling, as Opacus' DP data loader
            take = torch.nonzero(torch.rand(n, generator=generator) < rate).flatten()
        x, y = x_all[take], y_all[take]
        with torch.no_grad():
            p = torch.softmax(x @ weight.T + bias, dim=-1)
            p[torch.arange(len(y)), y] -= 1  # d loss / d logits, one row per record
            if sigma is None:
                grad_w, grad_b = p.T @ x / max(len(y), 1), p.mean(0)
            else:
                # ||d loss / d (W, b)|| of a record = ||p|| * sqrt(||x||^2 + 1); clip each to MAX_GRAD_NORM
                norms = p.norm(dim=-1) * torch.sqrt((x * x).sum(-1) + 1)
                p = p * (MAX_GRAD_NORM / (norms + 1e-6)).clamp(max=1.0).unsqueeze(-1)
                expected = rate * n  # Opacus divides the noised sum by the expected batch size
                noise = sigma * MAX_GRAD_NORM
                grad_w = (p.T @ x + noise * torch.randn(weight.shape, generator=generator)) / expected
                grad_b = (p.sum(0) + noise * torch.randn(bias.shape, generator=generator)) / expected
        weight.grad, bias.grad = grad_w, grad_b
        optimizer.step()
    return weight.detach(), bias.detach()


def site_plan(n: int, epochs: int) -> tuple[float, int]:
    """(sample rate, steps per round) a site of `n` training records plans, from Silo's own functions."""
    from client.privacy import planned_sample_rate
    from client.train import round_plan_steps
    from common.config import TrainingConfig

    _, steps = round_plan_steps(n, TrainingConfig(epochs=epochs, batch_size=BATCH_SIZE))
    return planned_sample_rate(dataset_size=n, batch_size=BATCH_SIZE), steps


def federated(
    feats: dict[str, Any], *, rounds: int, epochs: int, epsilon: float | None, central: bool = False, seed: int = 0
) -> dict[str, Any]:
    """Validation accuracy of the head after `rounds` of FedAvg (or one site holding everything)."""
    from common.accounting import find_noise_multiplier

    sites = feats["train"]
    if central:
        sites = [(torch.cat([x for x, _ in sites]), torch.cat([y for _, y in sites]))]
    plans = [site_plan(len(y), epochs) for _, y in sites]
    sigmas: list[float | None] = [
        None
        if epsilon is None
        else find_noise_multiplier(target_epsilon=epsilon, delta=DELTA, sample_rate=rate, steps=rounds * steps)
        for rate, steps in plans
    ]
    generator = torch.Generator().manual_seed(seed)
    head = feats["head"]
    sizes = torch.tensor([len(y) for _, y in sites], dtype=torch.float32)
    for _ in range(rounds):
        outs = [
            local_training(head, data, epochs=epochs, plan=plan, sigma=sigma, generator=generator)
            for data, plan, sigma in zip(sites, plans, sigmas, strict=True)
        ]
        head = tuple(sum(o[k] * w for o, w in zip(outs, sizes / sizes.sum(), strict=True)) for k in range(2))
    x, y = feats["holdout"]
    accuracy = float(((x @ head[0].T + head[1]).argmax(-1) == y).float().mean())
    return {"accuracy": accuracy, "sigma": [s for s in sigmas if s is not None]}


def adapter_dim(encoder: Path, labels: list[str], *, ffa: bool) -> int:
    """Values a distributed round's vector carries for the benchmark's adapter (head and LoRA, trainable
    ones only), counted by the site's own `adapter_parameters`: the rounding bound Δ2 grows with it."""
    from bench.harness import classification_task
    from bench.utility_banking77 import LORA_TARGETS
    from client.distributed_dp import adapter_parameters
    from common.config import LoraSettings
    from common.model import load_lora_model

    task = classification_task(labels, pooling="mean", head_init="label_names")
    lora = LoraSettings(r=1, alpha=2.0, dropout=0.0, target_modules=LORA_TARGETS, ffa=ffa)
    model = load_lora_model(str(encoder), lora, task)
    return sum(p.numel() for p in adapter_parameters(model).values())


def distributed_plans(
    sizes: list[int], *, rounds: int, batch_size: int, learning_rate: float, epsilon: float, dim: int
) -> list[Any]:
    """Each site's `DistributedRound` for the schedule, from the site's own planner
    (`client.distributed_dp.plan_round_for_records`): the benchmark's `[privacy]` for a distributed row (t =
    every site, the budget on the "sum" figure, σ spending `epsilon` over `rounds` and their `rounds + 1`
    hold-out answers at the bench's eval sigma) and its federation's SecAgg grid."""
    from dataclasses import replace

    from bench.harness import DISTRIBUTED_SECAGG_RANGE, privacy_config
    from bench.utility_banking77 import DISTRIBUTED, distributed_schedule
    from client.distributed_dp import plan_round_for_records
    from common.config import SecAggSection

    privacy = replace(
        privacy_config(
            epsilon, rounds=rounds, delta=DELTA, max_grad_norm=MAX_GRAD_NORM, distributed_min_honest=len(sizes)
        ),
        eval_noise_multiplier=distributed_schedule(DISTRIBUTED, epsilon).eval_noise_multiplier,
    )
    grid_step = 2.0 * SecAggSection().clip / DISTRIBUTED_SECAGG_RANGE  # client.secagg.grid_step
    return [
        plan_round_for_records(
            privacy, dataset_size=n, batch_size=batch_size, learning_rate=learning_rate, dim=dim, grid_step=grid_step
        )
        for n in sizes
    ]


def distributed(
    feats: dict[str, Any],
    *,
    rounds: int,
    batch_size: int,
    learning_rate: float,
    epsilon: float | None,
    dim: int,
    strategy: Any,
    seed: int = 0,
) -> dict[str, Any]:
    """Hold-out accuracy of the head after `rounds` of DP-FedSGD with distributed noise (client/distributed_dp.py):
    each site Poisson-samples its records, clips each record's gradient to MAX_GRAD_NORM, takes its share of one
    SGD step (-lr / expected batch) and adds its Skellam share (here Gaussian of the same variance: at these
    variances, ~1e13 integers², the two are indistinguishable); the coordinator averages the sites' steps
    unweighted (server/secagg.py) and hands the result to `strategy` (a server.strategy class) as the real
    round loop does. Rounding to the grid is left out (2^-27: under 1e-7 of a record's step per value)."""
    from client.privacy import planned_sample_rate

    sites = feats["train"]
    sizes = [len(y) for _, y in sites]
    plans = (
        [None] * len(sites)  # no noise: what the schedule reaches when only its steps limit it
        if epsilon is None
        else distributed_plans(
            sizes, rounds=rounds, batch_size=batch_size, learning_rate=learning_rate, epsilon=epsilon, dim=dim
        )
    )
    rates = [planned_sample_rate(dataset_size=n, batch_size=min(batch_size, n)) for n in sizes]  # as the planner
    generator = torch.Generator().manual_seed(seed)
    weight, bias = (t.clone().double() for t in feats["head"])
    for _ in range(rounds):
        step_w, step_b = torch.zeros_like(weight), torch.zeros_like(bias)
        for (x_all, y_all), plan, rate in zip(sites, plans, rates, strict=True):
            n = len(y_all)
            take = torch.nonzero(torch.rand(n, generator=generator) < rate).flatten()
            x, y = x_all[take].double(), y_all[take]
            p = torch.softmax(x @ weight.T + bias, dim=-1)
            p[torch.arange(len(y)), y] -= 1
            norms = p.norm(dim=-1) * torch.sqrt((x * x).sum(-1) + 1)
            p = p * (MAX_GRAD_NORM / (norms + 1e-12)).clamp(max=1.0).unsqueeze(-1)
            scale = -learning_rate / (rate * n)
            noise = 0.0 if plan is None else plan.grid_step * plan.share_variance**0.5
            step_w += scale * (p.T @ x) + noise * torch.randn(weight.shape, generator=generator, dtype=torch.float64)
            step_b += scale * p.sum(0) + noise * torch.randn(bias.shape, generator=generator, dtype=torch.float64)
        before = {"w": weight.numpy(), "b": bias.numpy()}
        combined = {"w": before["w"] + step_w.numpy() / len(sites), "b": before["b"] + step_b.numpy() / len(sites)}
        after = strategy.aggregate_combined(before, combined)
        weight, bias = torch.from_numpy(after["w"]), torch.from_numpy(after["b"])
    x, y = feats["holdout"]
    accuracy = float(((x.double() @ weight.T + bias).argmax(-1) == y).float().mean())
    return {"accuracy": accuracy, "sigma": [p.noise_multiplier for p in plans if p is not None]}


def distributed_table(feats: dict[str, Any], labels: list[str], args: argparse.Namespace, t0: float) -> int:
    """`--distributed`: hold-out accuracy of each (epsilon, ROUNDSxBATCH, SGD rate), mean and range of seeds;
    `bench` is that epsilon's schedule in bench/utility_banking77.py, and without `--distributed-learning-rate`
    each epsilon's rate is the bench's."""
    from bench.utility_banking77 import DISTRIBUTED, DISTRIBUTED_EPS8, distributed_schedule
    from common.config import FederationSection, StrategyName
    from server.strategy import make_strategy

    dims: dict[bool, int] = {}  # adapter values by FFA (a frozen A does not travel): the rounding bound grows with it
    configs = [(f"dist{e:g}", e) for e in sorted(EPSILONS, reverse=True)] + [("dist-noiseless", None)]
    rows, results = [], []
    for key, eps in configs:
        if args.only and key not in args.only:
            continue
        bench = DISTRIBUTED_EPS8 if eps is None else distributed_schedule(DISTRIBUTED, eps)
        schedules = [(bench.rounds, bench.batch_size) if s == "bench" else parse_rounds_x(s) for s in args.distributed]
        rates = args.distributed_learning_rate or [bench.learning_rate]
        if bench.ffa not in dims:
            dims[bench.ffa] = adapter_dim(encoder_dir(), labels, ffa=bench.ffa)
        dim = dims[bench.ffa]
        for (rounds, batch), lr in ((s, r) for s in schedules for r in rates):
            strategy = FederationSection(
                strategy=StrategyName(args.server), server_learning_rate=args.server_learning_rate
            )
            runs = [
                distributed(
                    feats,
                    rounds=rounds,
                    batch_size=batch,
                    learning_rate=lr,
                    epsilon=eps,
                    dim=dim,
                    strategy=make_strategy(strategy),
                    seed=seed,
                )
                for seed in range(args.seeds)
            ]
            accs = [100 * r["accuracy"] for r in runs]
            sigma = max(runs[0]["sigma"], default=0.0)
            rows.append(
                [
                    key,
                    rounds,
                    batch,
                    lr,
                    f"{sum(accs) / len(accs):.2f}",
                    f"{min(accs):.1f}-{max(accs):.1f}",
                    f"{sigma:.3f}",
                ]
            )
            results.append(
                {
                    "config": key,
                    "rounds": rounds,
                    "batch": batch,
                    "learning_rate": lr,
                    "accuracy": accs,
                    "sigma": runs[0]["sigma"],
                }
            )
            print(f"[ceiling] {' '.join(map(str, rows[-1]))}", file=sys.stderr, flush=True)
    adapter = "/".join(map(str, dims.values()))
    print(
        f"\nBanking77, DP-FedSGD with distributed noise (t = {SITES}, sum figure), head on frozen features, hold-out "
        f"accuracy % over {args.seeds} seeds; server {args.server}; adapter {adapter} values; clip {MAX_GRAD_NORM}, "
        f"delta {DELTA}"
    )
    print(format_table(["configuration", "rounds", "batch", "SGD lr", "mean", "range", "sigma (max site)"], rows))
    print(f"({time.perf_counter() - t0:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({"distributed": results}, indent=2))
    return 0


def parse_rounds_x(text: str) -> tuple[int, int]:
    """ROUNDSxN as two integers ("30x3000" -> (30, 3000)): N is local epochs, or a distributed row's expected batch."""
    parts = tuple(int(v) for v in text.lower().split("x"))
    if len(parts) != 2 or min(parts) < 1:
        raise ValueError(f"expected two positive integers joined by x, got {text!r}")
    return parts[0], parts[1]


def main(argv: list[str] | None = None) -> int:
    global BATCH_SIZE, LEARNING_RATE  # --batch-size and --learning-rate replace the defaults for this run
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=SHARED_DATA / "banking77", help="banking77 directory")
    ap.add_argument(
        "--schedules",
        nargs="+",
        default=["4x2", "5x4", "10x4", "20x4"],
        help="ROUNDSxLOCAL_EPOCHS to try (default: 4x2 5x4 10x4 20x4; 4x2 is utility_banking77's default)",
    )
    ap.add_argument("--seeds", type=int, default=2, help="noise/sampling seeds per cell (mean reported)")
    ap.add_argument("--batch-size", type=int, default=BATCH_SIZE, help=f"logical batch (default {BATCH_SIZE})")
    ap.add_argument("--learning-rate", type=float, default=LEARNING_RATE, help=f"Adam's (default {LEARNING_RATE})")
    ap.add_argument(
        "--only",
        nargs="+",
        help="run only these configurations (central, federated, dp1, dp3, dp8; with --distributed: dist1, dist3, "
        "dist8, dist-noiseless)",
    )
    ap.add_argument(
        "--distributed",
        nargs="+",
        metavar="ROUNDSxBATCH",
        help="instead: DP-FedSGD with distributed noise (one step a round, expected batch a site), e.g. 30x3000; "
        "bench: each epsilon's schedule in bench/utility_banking77.py",
    )
    ap.add_argument(
        "--distributed-learning-rate",
        type=float,
        nargs="+",
        help="SGD rates to try (default: each epsilon's rate in bench/utility_banking77.py)",
    )
    ap.add_argument("--server", choices=["fedavg", "fedadam"], default="fedavg", help="the coordinator's strategy")
    ap.add_argument("--server-learning-rate", type=float, default=0.01, help="FedAdam's rate (default 0.01)")
    ap.add_argument("--features", type=Path, help="keep the encoded features in this file and reuse them")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    try:
        schedules = [parse_rounds_x(s) for s in args.schedules]
    except ValueError:
        ap.error(f"--schedules takes ROUNDSxEPOCHS such as 5x4, got {args.schedules}")
    try:
        for s in args.distributed or []:
            if s != "bench":
                parse_rounds_x(s)
    except ValueError:
        ap.error(f"--distributed takes ROUNDSxBATCH such as 30x3000, or bench, got {args.distributed}")

    BATCH_SIZE, LEARNING_RATE = args.batch_size, args.learning_rate
    t0 = time.perf_counter()
    labels, train, _ = read_banking77(args.data)
    sites = dirichlet_split(train, sites=SITES, alpha=DIRICHLET_ALPHA, seed=SPLIT_SEED)
    print(f"machine: {machine()}\ncommit: {git_commit()}", flush=True)
    print(f"encoding {sum(map(len, sites))} records once (frozen encoder) ...", file=sys.stderr, flush=True)
    if args.features and args.features.exists():
        feats = torch.load(args.features)
    else:
        feats = site_features(encoder_dir(), labels, sites)
        if args.features:
            torch.save(feats, args.features)
    print(
        f"features in {time.perf_counter() - t0:.0f} s; sites train "
        f"{', '.join(str(len(y)) for _, y in feats['train'])}, hold-out {len(feats['holdout'][1])}",
        file=sys.stderr,
        flush=True,
    )
    if args.distributed:
        return distributed_table(feats, labels, args, t0)
    rows, results = [], []
    configs: list[tuple[str, str, float | None, bool]] = [
        ("central", "central, non-private", None, True),
        ("federated", "federated, non-private", None, False),
        *[(f"dp{e:g}", f"federated DP eps={e:g}", e, False) for e in sorted(EPSILONS, reverse=True)],
    ]
    configs = [c for c in configs if not args.only or c[0] in args.only]
    x, y = feats["holdout"]
    zero_shot = float(((x @ feats["head"][0].T + feats["head"][1]).argmax(-1) == y).float().mean())
    for _, title, eps, central in configs:
        cells = []
        for rounds, epochs in schedules:
            runs = [
                federated(feats, rounds=rounds, epochs=epochs, epsilon=eps, central=central, seed=s)
                for s in range(args.seeds)
            ]
            acc = sum(r["accuracy"] for r in runs) / len(runs)
            cells.append(f"{100 * acc:.1f}")
            results.append(
                {"config": title, "rounds": rounds, "local_epochs": epochs, "accuracy": acc, "sigma": runs[0]["sigma"]}
            )
            print(f"[ceiling] {title} {rounds}x{epochs}: {100 * acc:.1f}%", file=sys.stderr, flush=True)
        rows.append([title, *cells])
    print(
        f"\nBanking77, head on frozen all-MiniLM-L6-v2 features, hold-out accuracy % (mean of {args.seeds} seeds); "
        f"zero-shot round-0 head {100 * zero_shot:.1f}%; batch {BATCH_SIZE} (Poisson under DP), Adam "
        f"{LEARNING_RATE}, clip {MAX_GRAD_NORM}, delta {DELTA}"
    )
    print(format_table(["configuration", *(f"{r} rounds x {e} ep" for r, e in schedules)], rows))
    print(f"({time.perf_counter() - t0:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({"zero_shot": zero_shot, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
