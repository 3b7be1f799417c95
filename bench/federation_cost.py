"""What the federation itself costs: bytes each site sends per round, against the adapter's parameter
count and the full model's size, and the federation overhead of a round (round wall time minus the
slowest site's training time) as a share of the round.

Runs a real federation (SuperLink + SuperNodes as separate processes, the demo's sites and model,
DP on) and reads the figures from its manifest. Usage:

    .venv/bin/python bench/federation_cost.py [--sites 3] [--rounds 3] [--records 240] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from silo.demo import prepare_demo, run_local_federation  # noqa: E402

# A 7B-shaped reference (Llama-2-7B: 32 layers, hidden 4096, fp16 weights ~6.7e9 params), to put the
# measured ratio in scale. Computed, not measured: LoRA rank 8 on q/k/v/o.
REF_7B = {"layers": 32, "hidden": 4096, "params": 6.74e9, "bytes_per_param": 2}


def machine() -> str:
    return f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def model_stats(model_dir: Path) -> tuple[int, int]:
    tensors = [t for f in model_dir.glob("*.safetensors") for t in load_file(f).values()]
    return sum(t.numel() for t in tensors), sum(t.numel() * t.element_size() for t in tensors)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sites", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--records", type=int, default=240)
    ap.add_argument("--out", type=Path, default=None, help="keep the run here (default: a temp dir)")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="silo-bench-fed-"))
    layout = prepare_demo(out, sites=args.sites, records=args.records, rounds=args.rounds)
    sites = sorted((layout.out / "sites").glob("*/site.toml"))
    manifest = run_local_federation(layout, sites, timeout=1800, log=sys.stderr)

    params, model_bytes = model_stats(layout.base_model)
    adapter_params = sum(t.numel() for t in load_file(layout.run_dir / "final" / "adapter_model.safetensors").values())
    rows = []
    for r in manifest["rounds"]:
        if r["round"] == 0:
            continue
        up = [s["bytes_up"] for s in r["sites"]]
        slowest = r["slowest_site_train_seconds"]
        rows.append((r["round"], len(up), max(up), r["bytes_down_per_site"], r["round_seconds"], slowest))

    print(f"\nFederation cost — machine: {machine()}; {args.sites} sites, real SuperLink/SuperNodes on loopback, DP on")
    print(
        f"base model: {params:,} params, {model_bytes / 1e6:.2f} MB; adapter: {adapter_params:,} params "
        f"({adapter_params / params:.2%} of the model)\n"
    )
    print(
        f"{'round':>5} {'sites':>5} {'bytes up/site':>14} {'bytes down/site':>16} {'up / adapter fp32':>17} "
        f"{'up / model':>10} {'round s':>8} {'slowest train s':>15} {'overhead share':>14}"
    )
    for rnd, n, up, down, wall, slowest in rows:
        print(
            f"{rnd:>5} {n:>5} {up:>14,} {down:>16,} {up / (adapter_params * 4):>17.3f} {up / model_bytes:>10.4f} "
            f"{wall:>8.1f} {slowest:>15.1f} {(wall - slowest) / wall:>14.1%}"
        )
    ref = REF_7B
    ref_adapter = ref["layers"] * 4 * 2 * 8 * ref["hidden"]
    print(
        f"\nscale (computed, not measured): a rank-8 q/k/v/o adapter on a 7B model is {ref_adapter:,} params, "
        f"{ref_adapter * 4 / 1e6:.1f} MB in fp32 per site per round vs {ref['params'] * ref['bytes_per_param'] / 1e9:.1f} GB "
        f"for the fp16 model ({ref_adapter * 4 / (ref['params'] * ref['bytes_per_param']):.3%})."
    )
    print(
        "overhead = round wall time minus the slowest site's training time: process start-up and imports at "
        "the sites, model load, scrubbing, hold-out evaluation, ledger I/O, Flower messaging, aggregation."
    )
    (out / "federation_cost.json").write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
