"""Coordinator cost as the federation grows: aggregation and per-update verification, 10 to 100 sites,
LoRA rank 8 to 64 on a 7B-shaped adapter.

    .venv/bin/python bench/aggregation_scale.py [--quick | --full] [--max-gib 4] [--json FILE]

Adapter shape: Llama-2-7B's attention (32 layers; q/k/v/o projections 4096 x 4096), LoRA A [r, 4096] and
B [4096, r] per projection, fp32 as sites send them: 32 * 4 * 2 * r * 4096 * 4 bytes = 4.19 MB * r per
site (rank 8: 33.5 MB, rank 64: 268 MB). Random tensors, no weights.

Aggregators: those in `server.strategy`: FedAvg's example-weighted mean (`weighted_average`), and the
robust ones when present (`trimmed_mean` with 10% per side, `coordinate_median`).
Verification, per update, as the coordinator does it: `common.adapter.hash_state` (sha256 over every
tensor) and `common.sealing.open_sealed` (Ed25519 signature check + recomputed bindings).

Memory: 100 sites at rank 64 hold 26.8 GB of updates, more than this machine's RAM. A configuration whose
updates fit in `--max-gib` (default 4) is aggregated in one call over all updates in memory, exactly as
the coordinator does. A larger one is STREAMED by layer: the aggregator is called once per layer on that
layer's tensors from every site (every aggregator here works tensor by tensor, so the result is the same),
holding sites x 1/32 of an adapter at a time; the reported time is the sum over layers, tensor
generation excluded. Verification is linear in updates: it is timed on whole updates (median of 3)
and multiplied by the number of sites.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import format_table, git_commit, machine  # noqa: E402

LAYERS, HIDDEN = 32, 4096  # Llama-2-7B
MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
TRIM_FRACTION = 0.1  # 10% of the sites dropped from each end, a common robust setting
REPEATS = 3  # verification timings: median of 3
SEAL_CHECK = ["?"]  # which check was timed, for the report


def layer_keys(layer: int) -> list[tuple[str, tuple[int, int]]]:
    """PEFT's saved-key names and shapes for one layer's adapter at rank r (shape uses 'r' later)."""
    out = []
    for m in MODULES:
        base = f"base_model.model.model.layers.{layer}.self_attn.{m}"
        out.append((f"{base}.lora_A.weight", (0, HIDDEN)))
        out.append((f"{base}.lora_B.weight", (HIDDEN, 0)))
    return out


def random_layer(rng: np.random.Generator, layer: int, rank: int) -> dict[str, np.ndarray]:
    return {
        k: rng.standard_normal((rank, HIDDEN) if s[0] == 0 else (HIDDEN, rank), dtype=np.float32)
        for k, s in layer_keys(layer)
    }


def adapter_bytes(rank: int) -> int:
    return LAYERS * len(MODULES) * 2 * rank * HIDDEN * 4


def aggregators() -> dict[str, Callable[[Sequence[dict[str, np.ndarray]]], Any]]:
    from server import strategy

    out: dict[str, Callable[[Sequence[dict[str, np.ndarray]]], Any]] = {}
    # Unequal site sizes, as in practice; the weights only scale the sum.
    out["fedavg"] = lambda arrays: strategy.weighted_average(arrays, [100 + i for i in range(len(arrays))])
    if hasattr(strategy, "trimmed_mean"):
        out["trimmed_mean"] = lambda arrays: strategy.trimmed_mean(arrays, trim_fraction=TRIM_FRACTION)
    if hasattr(strategy, "coordinate_median"):
        out["median"] = strategy.coordinate_median
    return out


def time_aggregation(
    sites: int, rank: int, aggs: dict[str, Callable[[Any], Any]], *, max_bytes: int, seed: int
) -> tuple[dict[str, float], str, int]:
    """({aggregator: seconds}, 'in memory' or 'streamed by layer', bytes held at once); every aggregator
    runs on the same updates, generated once (generation is not timed)."""
    rng = np.random.default_rng(seed)
    total = sites * adapter_bytes(rank)
    seconds = dict.fromkeys(aggs, 0.0)
    streamed = total > max_bytes
    chunks = [list(range(LAYERS))] if not streamed else [[layer] for layer in range(LAYERS)]
    for layers in chunks:
        updates = [{k: v for layer in layers for k, v in random_layer(rng, layer, rank).items()} for _ in range(sites)]
        for name, agg in aggs.items():
            t0 = time.perf_counter()
            agg(updates)
            seconds[name] += time.perf_counter() - t0
        del updates
    return seconds, "streamed by layer" if streamed else "in memory", total // len(chunks)


def time_verification(rank: int, seed: int) -> tuple[float, float]:
    """(sha256 seconds, seal-check seconds) for one update, medians of REPEATS."""
    import torch

    from common.adapter import hash_state
    from common.keys import generate_signing_key

    rng = np.random.default_rng(seed)
    state = {k: torch.from_numpy(v) for layer in range(LAYERS) for k, v in random_layer(rng, layer, rank).items()}
    key = generate_signing_key()
    digest = hash_state(state)
    check, how = _seal_checker(key, digest)
    SEAL_CHECK[0] = how
    hashes, seals = [], []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        hash_state(state)
        hashes.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        check()
        seals.append(time.perf_counter() - t0)
    return statistics.median(hashes), statistics.median(seals)


def _seal_checker(key: Any, digest: str) -> tuple[Callable[[], None], str]:
    """The coordinator's check of one sealed update (`common.sealing.open_sealed`, Ed25519 verify plus the
    recomputed bindings); a bare `common.keys.verify` of a seal-sized payload where sealing is absent."""
    from common.keys import sign, verify

    try:
        from common.sealing import UpdateBinding, open_sealed, seal_update

        binding = UpdateBinding(
            run_id="bench",
            round=1,
            site_id="site-0",
            update_sha256=digest,
            global_sha256=digest,
            metrics={"num-examples": 1000.0, "train_loss": 1.0},
            declarations={"privacy": "{}"},
        )
        sealed, public = seal_update(key, binding), key.public_key()
        open_sealed(sealed, public, binding)
        return (lambda: open_sealed(sealed, public, binding) and None), "common.sealing.open_sealed"
    except (ImportError, TypeError):
        payload = json.dumps({"update_sha256": digest, "global_sha256": digest, "run_id": "bench"}).encode()
        sig, public = sign(key, payload), key.public_key()
        return (lambda: None if verify(public, payload, sig) else _fail()), "common.keys.verify"


def _fail() -> None:
    raise RuntimeError("signature did not verify")


def growth(rows: list[dict[str, Any]], names: list[str]) -> list[str]:
    """Measured growth factors: cost at the largest over the smallest point of each sweep, against bytes."""
    out = []
    by = {(r["sites"], r["rank"]): r for r in rows}
    sites, ranks = sorted({r["sites"] for r in rows}), sorted({r["rank"] for r in rows})
    sweeps = [
        (f"sites {sites[0]} -> {sites[-1]} at rank {ranks[0]}", (sites[0], ranks[0]), (sites[-1], ranks[0])),
        (f"rank {ranks[0]} -> {ranks[-1]} at {sites[0]} sites", (sites[0], ranks[0]), (sites[0], ranks[-1])),
    ]
    for title, lo, hi in sweeps:
        if lo == hi or lo not in by or hi not in by:
            continue
        a, b = by[lo], by[hi]
        factors = ", ".join(f"{n} x{b[f'{n}_s'] / max(a[f'{n}_s'], 1e-9):.1f}" for n in [*names, "verify_total"])
        out.append(f"growth, {title} (bytes x{b['total_gb'] / a['total_gb']:.0f}): {factors}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="rank 8 at 10/50/100 sites, ranks 8-64 at 10 sites")
    g.add_argument("--full", action="store_true", help="every (sites, rank) pair, 100 x rank 64 included")
    ap.add_argument("--sites", type=int, nargs="+", default=[10, 50, 100])
    ap.add_argument("--ranks", type=int, nargs="+", default=[8, 16, 32, 64])
    ap.add_argument("--max-gib", type=float, default=4.0, help="updates held in memory at most (else streamed)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    if args.full:
        grid = [(n, r) for r in args.ranks for n in args.sites]
    else:  # default and --quick: the sites sweep at the smallest rank, the rank sweep at the fewest sites,
        # plus (default only) the 100-site, largest-rank corner that has to stream.
        grid = sorted(
            {(n, min(args.ranks)) for n in args.sites}
            | {(min(args.sites), r) for r in args.ranks}
            | (set() if args.quick else {(max(args.sites), max(args.ranks))}),
            key=lambda x: (x[1], x[0]),
        )
    max_bytes = int(args.max_gib * 2**30)
    aggs = aggregators()
    print(f"machine: {machine()}\ncommit: {git_commit()}", flush=True)
    print(
        f"adapter: 7B-shaped LoRA on q/k/v/o ({LAYERS} layers, hidden {HIDDEN}), fp32; aggregators: "
        f"{', '.join(aggs)}; in-memory cap {args.max_gib:g} GiB",
        flush=True,
    )

    verify = {r: time_verification(r, seed=r) for r in sorted({r for _, r in grid})}
    rows = []
    for sites, rank in grid:
        row: dict[str, Any] = {
            "sites": sites,
            "rank": rank,
            "update_mb": adapter_bytes(rank) / 1e6,
            "total_gb": sites * adapter_bytes(rank) / 1e9,
        }
        seconds, row["mode"], held = time_aggregation(sites, rank, aggs, max_bytes=max_bytes, seed=sites * 1000 + rank)
        row.update({f"{name}_s": t for name, t in seconds.items()}, held_gb=held / 1e9)
        sha, seal = verify[rank]
        row["sha256_per_update_s"], row["seal_per_update_s"] = sha, seal
        row["verify_total_s"] = sites * (sha + seal)
        rows.append(row)
        print(
            f"[scale] {sites} sites rank {rank}: "
            + ", ".join(f"{n} {row[f'{n}_s']:.2f}s" for n in aggs)
            + f", verify {row['verify_total_s']:.2f}s ({row['mode']})",
            file=sys.stderr,
            flush=True,
        )

    header = [
        "sites",
        "rank",
        "MB/update",
        "GB total",
        *[f"{n} s" for n in aggs],
        "sha256 ms/upd",
        "seal ms/upd",
        "verify all s",
        "how held",
    ]
    table = [
        [
            r["sites"],
            r["rank"],
            f"{r['update_mb']:.1f}",
            f"{r['total_gb']:.2f}",
            *[f"{r[f'{n}_s']:.2f}" for n in aggs],
            f"{1000 * r['sha256_per_update_s']:.1f}",
            f"{1000 * r['seal_per_update_s']:.3f}",
            f"{r['verify_total_s']:.2f}",
            f"{r['mode']} ({r['held_gb']:.2f} GB)",
        ]
        for r in rows
    ]
    print(format_table(header, table))
    print(f"seal check timed: {SEAL_CHECK[0]}")
    for line in growth(rows, list(aggs)):
        print(line)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": machine(),
                    "commit": git_commit(),
                    "max_gib": args.max_gib,
                    "rows": rows,
                    "seal_check": SEAL_CHECK[0],
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
