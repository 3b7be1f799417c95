"""DP-SGD overhead: step time and peak memory of DP vs plain LoRA training, per Opacus grad-sample mode.

    .venv/bin/python bench/dp_overhead.py [--seq-lens 32 128] [--rounds 12] [--device cpu|cuda]

Model: a tiny Llama from config (hidden 256, 4 layers, 4 heads, MLP 512, vocab 2048; ~3.7M params) with
LoRA r=8 on q/k/v/o (PEFT), batch 16 of random token ids, AdamW, the per-sample loss Silo trains with.
The same model (same seed), batch and optimizer for every configuration; DP goes through
`client.privacy.make_private` with noise 1.0 and clip 1.0. Fixed batches (no Poisson sampling) so that
every step sees the same 16 records and step times compare like for like.

Time: per sequence length, one process builds all four configurations (plain, hooks, functorch,
ghost) and, after 3 warm-up steps each, times one step of each per round in rotating order. "x plain"
is the median over rounds of (mode's step / plain's step in the same round): on a shared, loaded machine
the load hits all modes alike. Memory: each configuration again in a FRESH process.

Memory, CPU: the process's peak resident set size during training. After setup (model, data,
optimizer, make_private) the peak counter is reset (`echo 5 > /proc/self/clear_refs`, Linux >= 4.0);
after training `VmHWM` is read from `/proc/self/status`. "train MiB" is that peak minus the RSS at the
reset: the memory training itself needs, which is what DP adds to. Memory, GPU: the peak of
`torch.cuda.max_memory_allocated()` over training, minus what was allocated at the reset.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MODES = ("plain", "hooks", "functorch", "ghost")
BATCH_SIZE = 16  # records per step, as in STACK.md's measurements
WARMUP_STEPS = 3  # first steps pay for allocator growth and lazy init; not timed
MEMORY_STEPS = 3  # peak memory is reached by the first step; a few more to be sure
VOCAB = 2048  # a small BPE vocabulary, as a site tokenizer trained on local text would have


def build(mode: str, seq_len: int, device_name: str) -> Callable[[], None]:
    """One configuration's training step, on a fresh model with the same seed and batch as the others."""
    import warnings

    warnings.filterwarnings("ignore")
    import torch
    import torch.nn.functional as F
    from peft import LoraConfig, get_peft_model
    from torch.utils.data import DataLoader, TensorDataset
    from transformers import LlamaConfig, LlamaForCausalLM

    from client.privacy import make_private
    from common.config.privacy import PrivacyConfig

    device = torch.device(device_name)
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=512,
        vocab_size=VOCAB,
        max_position_embeddings=max(seq_len, 128),
    )
    base = LlamaForCausalLM(config).to(device)  # to the device before LoRA (Opacus issue 820)
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    model: Any = get_peft_model(base, lora)
    ids = torch.randint(0, VOCAB, (BATCH_SIZE, seq_len), generator=torch.Generator().manual_seed(1))
    data = TensorDataset(ids, torch.ones_like(ids), ids.clone())
    optimizer: Any = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loader: Any = DataLoader(data, batch_size=BATCH_SIZE)
    reduce: Callable[[Any], Any] = torch.mean
    if mode != "plain":
        privacy = PrivacyConfig(
            max_grad_norm=1.0,
            budget_epsilon=10.0,
            budget_delta=1e-5,
            noise_multiplier=1.0,
            grad_sample_mode=mode,
            poisson_sampling=False,
        )
        private = make_private(model, optimizer, loader, config=privacy, noise_multiplier=1.0, max_grad_norm=1.0)
        model, optimizer, loader, reduce = private.model, private.optimizer, private.data_loader, private.reduce_loss
    input_ids, attention, labels = (t.to(device) for t in next(iter(loader)))

    def step() -> None:
        logits = model(input_ids=input_ids, attention_mask=attention).logits
        token = F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), labels[:, 1:].reshape(-1), reduction="none")
        optimizer.zero_grad(set_to_none=True)
        reduce(token.view(BATCH_SIZE, -1).mean(1)).backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return step


def time_modes(seq_len: int, rounds: int, device: str) -> dict[str, dict[str, float]]:
    """All modes in this one process, one step each per round in rotating order: load on a shared
    machine hits every mode alike, and each DP/plain ratio is taken within a round."""
    steps = {mode: build(mode, seq_len, device) for mode in MODES}
    for step in steps.values():
        for _ in range(WARMUP_STEPS):
            step()
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    for r in range(rounds):
        for mode in MODES[r % len(MODES) :] + MODES[: r % len(MODES)]:
            t0 = time.perf_counter()
            steps[mode]()
            times[mode].append(time.perf_counter() - t0)
    return {
        mode: {
            "step_ms": 1000 * statistics.median(times[mode]),
            "time_ratio": statistics.median(t / p for t, p in zip(times[mode], times["plain"], strict=True)),
        }
        for mode in MODES
    }


def measure_memory(mode: str, seq_len: int, device_name: str) -> dict[str, float]:
    """Peak memory of training in this (fresh) process; see the module docstring for the method."""
    import torch

    device = torch.device(device_name)
    step = build(mode, seq_len, device_name)
    at_reset = _reset_peak(device)
    for _ in range(MEMORY_STEPS):
        step()
    peak = _peak(device)
    return {"train_mib": (peak - at_reset) / 2**20, "peak_mib": peak / 2**20}


def _reset_peak(device: Any) -> int:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    return _status_bytes("VmRSS")


def _peak(device: Any) -> int:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated()
    return _status_bytes("VmHWM")


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def machine(device: str) -> str:
    import torch

    where = torch.cuda.get_device_name(0) if device.startswith("cuda") else f"CPU, {os.cpu_count()} cores"
    return (
        f"{platform.platform()}; {platform.processor() or platform.machine()}; {where}; "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads); python {platform.python_version()}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--rounds", type=int, default=12, help="timed steps per mode (default 12)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1, as a site process runs on a small machine)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results here")
    parser.add_argument("--memory-worker", nargs=2, metavar=("MODE", "SEQ_LEN"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    # One thread by default: on a small shared machine, OpenMP threads that outnumber free cores make
    # step times swing 20x (measured here: 0.25 s to 5 s for the same step with 2 threads under load).
    torch.set_num_threads(args.threads)

    if args.memory_worker:
        print(json.dumps(measure_memory(args.memory_worker[0], int(args.memory_worker[1]), args.device)))
        return 0

    t0 = time.perf_counter()
    results: dict[tuple[str, int], dict[str, float]] = {}
    for seq_len in args.seq_lens:
        for mode, timing in time_modes(seq_len, args.rounds, args.device).items():
            results[(mode, seq_len)] = dict(timing)
        for mode in MODES:
            worker = [sys.executable, __file__, "--memory-worker", mode, str(seq_len)]
            worker += ["--device", args.device, "--threads", str(args.threads)]
            out = subprocess.run(worker, capture_output=True, text=True, check=False, cwd=REPO)
            if out.returncode != 0:
                print(f"memory {mode} seq {seq_len}: FAILED\n{out.stderr[-2000:]}", file=sys.stderr)
                continue
            results[(mode, seq_len)].update(json.loads(out.stdout.strip().splitlines()[-1]))

    memory = "GPU allocated" if args.device.startswith("cuda") else "RSS (VmHWM), fresh process per row"
    print(f"machine: {machine(args.device)}")
    print(
        f"model: tiny Llama (hidden 256, 4 layers, vocab {VOCAB}), LoRA r=8 q/k/v/o, batch {BATCH_SIZE}, AdamW, "
        f"noise 1.0, clip 1.0, {args.threads} torch thread(s)\n"
        f"time: median of {args.rounds} interleaved steps per mode in one process (x plain: median of per-round "
        f"ratios)\nmemory: {memory}; train MiB = peak during training minus at its start"
    )
    header = (
        f"{'seq':>4} {'mode':>10} {'step ms':>8} {'x plain':>8} {'train MiB':>10} {'x plain':>8} "
        f"{'peak MiB':>9} {'x plain':>8}"
    )
    print(header)
    print("-" * len(header))
    for seq_len in args.seq_lens:
        plain = results[("plain", seq_len)]
        for mode in MODES:
            r = results[(mode, seq_len)]
            train, peak = r.get("train_mib", math.nan), r.get("peak_mib", math.nan)
            print(
                f"{seq_len:>4} {mode:>10} {r['step_ms']:>8.1f} {r['time_ratio']:>8.2f} {train:>10.1f} "
                f"{train / plain.get('train_mib', math.nan):>8.2f} {peak:>9.1f} {peak / plain.get('peak_mib', math.nan):>8.2f}"
            )
    print(f"(total {time.perf_counter() - t0:.0f} s)")
    if args.json:
        rows = [{"mode": m, "seq_len": s, **r} for (m, s), r in results.items()]
        Path(args.json).write_text(json.dumps({"machine": machine(args.device), "results": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
