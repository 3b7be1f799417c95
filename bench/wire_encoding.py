"""Does a compact wire encoding change what the federation learns? The same federation with the adapter on the
wire in fp32, fp16 (the default) and int8, each run `--repeats` times: the spread between repeats of one
encoding (fresh DP noise every round) is the yardstick for the differences between encodings.

- demo: the demo's three sites (synthetic clinical notes and bank messages, the demo's model), DP on; the
  figure is the final adapter's EXACT mean held-out loss over the sites' hold-out records, computed here.
- banking77 (needs ../shared/data/banking77 and the benchmark encoder, bench/requirements.txt): the Banking77
  quick settings of bench/utility_banking77.py at DP eps=8, test accuracy on its test records.

Both run the coordinator's real round loop against the sites' real handlers in this process
(bench/harness.py: `InProcessGrid`); the encoding is set with `[federation] wire_encoding`. Usage:

    .venv/bin/python bench/wire_encoding.py [--repeats 2] [--skip-banking77]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from statistics import mean, pstdev
from typing import Any

from harness import SHARED_DATA, Configuration, git_commit, machine, run_federation_here

ENCODINGS = ("fp32", "fp16", "int8")


def _with_encoding(federation_toml: Path, encoding: str) -> None:
    """The federation TOML rewritten with `[federation] wire_encoding = encoding`."""
    from dataclasses import replace

    from common.config import WireEncoding, load_federation_config

    cfg = load_federation_config(str(federation_toml))
    fed = replace(cfg.federation, wire_encoding=WireEncoding(encoding))
    federation_toml.write_text(replace(cfg, federation=fed).to_toml(defaults=True))


def demo_run(work: Path, encoding: str) -> float:
    """Final exact held-out loss (mean over the demo sites' hold-out records)."""
    from safetensors.torch import load_file  # noqa: F401  (transformers' loader needs it present)

    from client.site_data import load_site_data
    from client.train import evaluate
    from common.adapter import load_adapter_state, numpy_to_state
    from common.config import load_site_config
    from common.model import load_lora_model, load_tokenizer
    from silo.demo import DEMO_SITES, prepare_demo

    layout = prepare_demo(work, sites=len(DEMO_SITES), insecure=True, log=open("/dev/null", "w"))  # noqa: SIM115
    _with_encoding(layout.federation_config, encoding)
    sites = [layout.site_config(site_id) for site_id, _, _ in DEMO_SITES]
    _, arrays = run_federation_here(work, sites, layout.federation_config, processes=False)
    losses, n = 0.0, 0
    for site in sites:
        cfg = load_site_config(str(site))
        data = load_site_data(cfg, load_tokenizer(cfg.model_source()))
        model = load_lora_model(cfg.model_source(), cfg.lora, cfg.task)
        load_adapter_state(model, numpy_to_state(arrays))
        result = evaluate(model, data.holdout, task=cfg.task, device=next(model.parameters()).device)
        losses += result.loss * result.num_examples
        n += result.num_examples
    return losses / n


def banking77_run(work: Path, encoding: str) -> float:
    """Test accuracy of the DP eps=8 federation at Banking77's quick settings."""
    import utility_banking77 as b77

    original = b77.write_federation_toml

    def write(path: Path, **kw: Any) -> Path:
        out = original(path, **kw)
        _with_encoding(out, encoding)
        return out

    b77.write_federation_toml = write
    try:
        s = b77.QUICK
        labels, train, test = b77.read_banking77(SHARED_DATA / "banking77")
        split = b77.dirichlet_split(train, sites=b77.SITES, alpha=b77.DIRICHLET_ALPHA, seed=b77.SPLIT_SEED)
        sites = [b77.subsample(r, s.train_per_site, b77.SPLIT_SEED + i) for i, r in enumerate(split)]
        test = b77.subsample(test, s.test_n, b77.SPLIT_SEED)
        dp8 = Configuration("dp8", "DP eps=8", sites, 8.0)
        row = b77.measure(work, dp8, labels, b77.encoder_dir(), s, False, test)
    finally:
        b77.write_federation_toml = original
    return float(row["accuracy"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--skip-banking77", action="store_true")
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="silo-bench-wire-"))
    print(f"machine: {machine()}\ncommit: {git_commit()}", flush=True)
    benches = [("demo: exact held-out loss (lower is better)", demo_run)]
    if not args.skip_banking77 and (SHARED_DATA / "banking77").exists():
        benches.append(("banking77 quick, DP eps=8: test accuracy", banking77_run))
    for title, run in benches:
        results = {
            enc: [run(work / f"{run.__name__}-{enc}-{i}", enc) for i in range(args.repeats)] for enc in ENCODINGS
        }
        print(f"\n{title}")
        spread = max(pstdev(v) for v in results.values()) if args.repeats > 1 else float("nan")
        for enc, values in results.items():
            print(f"  {enc:<5} " + "  ".join(f"{v:.4f}" for v in values) + f"   mean {mean(values):.4f}")
        print(
            f"  largest difference of means from fp32: "
            f"{max(abs(mean(v) - mean(results['fp32'])) for v in results.values()):.4f}; "
            f"largest run-to-run spread (std) within one encoding: {spread:.4f}"
        )
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
