"""Empirical privacy audit with canaries: plant random secrets at a site, train through the site's
real round handler, and measure how much the trained adapter gives them away. One concept, the canary
audit: planting, the two measures and the run that produces them.

Two measures, reported next to the ε the site's ledger claims:

- Exposure (Carlini et al. 2019, "The Secret Sharer"): each canary is "<prefix> <secret>", the
  secret random letters. Its rank among `candidates` random secrets of the same form, by the
  trained model's log-perplexity, gives exposure = log2(candidates + 1) - log2(rank): about 1 for a
  secret the model never saw, log2(candidates + 1) for a memorised one.
- A one-run ε lower bound (Steinke, Nasr, Jagielski 2023): half of 2m canaries are planted, half held
  out (the coin flips); the auditor guesses "planted" for the canaries the model finds least
  surprising. Under ε-DP the number of correct guesses is stochastically dominated by
  Binomial(r, e^ε / (1 + e^ε)); the largest ε whose tail still has probability <= 5% at the observed
  count is a lower bound at 95% confidence. It is the bound for δ = 0: the paper's δ term is
  omitted, so it is indicative at δ = 1e-5 rather than certified. With few canaries it is weak by
  design (an honest lower bound cannot say more from m guesses); exposure is the sharper signal.

Where it runs. The site's real path, in process: `client.site.handle_train` (ingest, Presidio scrub,
tokenize, ledger reservation, `client.train.train_round` under `client.privacy.make_private`, ledger
record), round after round, for ONE site, with the coordinator's step reduced to what FedAvg does
with one site (the next round starts from that site's update). A Flower deployment (SuperLink and a
SuperNode as processes) would add ~10 s of process start per round and nothing the measurement
depends on; on 2 cores the whole audit (both runs) must take a couple of minutes.

DP on plants each canary ONCE (the claim is per record); DP off plants each `repeats_without_dp`
times, so memorisation is visible in a small run. The DP-on run's ε claim is read back from the
site's own ledger.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common.schema import number_or_inf

CANARY_PREFIX = "the vault passphrase is"
"""Shared by every canary and candidate, so ranking depends on the secret alone."""

SECRET_ALPHABET = "bcdfghjkmnpqrstvwxz"
"""Consonants: random letters that no Presidio recognizer takes for PII, so scrubbing keeps them."""

CONFIDENCE = 0.95
"""Of the one-run ε lower bound."""


@dataclass(frozen=True)
class CanaryAuditConfig:
    canaries: int = 8  # planted (DP-on once each), and as many held out as the membership test's negatives
    secret_length: int = 6  # letters: 19^6 = 4.7e7 possible secrets, so candidates never repeat a canary
    candidates: int = 255  # random secrets each canary is ranked among: max exposure log2(256) = 8 bits
    # Copies of each canary in the DP-off run, and local passes a round: enough that the DP-off run memorises
    # every canary whatever the CPU and the draw (measured: 24 x 5 gave 5.2-8.0 bits per canary; 8 x 3
    # gave 3.1-3.9 bits on average, too close to chance for a test that must never flake).
    repeats_without_dp: int = 24
    filler_records: int = 64  # ordinary synthetic notes around the canaries
    rounds: int = 3
    epochs: int = 5
    batch_size: int = 16
    learning_rate: float = 0.01  # high for LoRA: a few dozen steps must be enough to memorise without DP
    target_epsilon: float = 8.0  # DP-on: σ is derived so that `rounds` rounds spend this (as in the demo)
    delta: float = 1e-5
    max_grad_norm: float = 1.0
    seed: int = 0


@dataclass
class SideResult:
    dp: bool
    claimed_epsilon: float  # the site's ledger total after the run (inf without DP)
    delta: float
    noise_multiplier: float
    planted: int  # canaries with at least one copy in the training split
    held_out: int
    repeats: int
    exposure_planted: list[float] = field(default_factory=list)
    exposure_held_out: list[float] = field(default_factory=list)
    correct_guesses: int = 0
    guesses: int = 0
    epsilon_lower_bound: float = 0.0
    seconds: float = 0.0

    @property
    def mean_exposure_planted(self) -> float:
        return sum(self.exposure_planted) / max(len(self.exposure_planted), 1)

    @property
    def mean_exposure_held_out(self) -> float:
        return sum(self.exposure_held_out) / max(len(self.exposure_held_out), 1)


@dataclass
class CanaryAudit:
    config: CanaryAuditConfig
    max_exposure: float
    sides: list[SideResult]

    def as_dict(self) -> dict[str, Any]:
        sides = [
            {
                **asdict(s),
                "mean_exposure_planted": s.mean_exposure_planted,
                "mean_exposure_held_out": s.mean_exposure_held_out,
                "claimed_epsilon": number_or_inf(s.claimed_epsilon),
            }
            for s in self.sides
        ]
        return {"config": asdict(self.config), "max_exposure": self.max_exposure, "sides": sides}


def random_secret(rng: random.Random, length: int) -> str:
    return " ".join(rng.choice(SECRET_ALPHABET) for _ in range(length))


def canary_text(secret: str) -> str:
    return f"{CANARY_PREFIX} {secret}."


# ---- ε lower bound (Steinke et al. 2023, δ = 0) -------------------------------------------------


def binomial_tail(n: int, p: float, k: int) -> float:
    """P[Binomial(n, p) >= k]."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


def one_run_epsilon_lower_bound(correct: int, guesses: int, *, confidence: float = CONFIDENCE) -> float:
    """Largest ε such that `correct` of `guesses` is still unlikely (tail <= 1 - confidence) under ε-DP."""
    beta = 1 - confidence
    if guesses == 0 or binomial_tail(guesses, 0.5, correct) > beta:
        return 0.0
    lo, hi = 0.0, 50.0
    for _ in range(60):  # bisection on a monotone tail: 50 / 2^60 is far below any reported digit
        mid = (lo + hi) / 2
        p = math.exp(mid) / (1 + math.exp(mid))
        if binomial_tail(guesses, p, correct) <= beta:
            lo = mid
        else:
            hi = mid
    return lo


# ---- the audit ----------------------------------------------------------------------------------


def run_canary_audit(
    out: Path,
    *,
    config: CanaryAuditConfig | None = None,
    base_model: str | Path | None = None,
    dp_sides: tuple[bool, ...] = (True, False),
    log: Callable[[str], None] = lambda _line: None,
) -> CanaryAudit:
    """Both runs (DP on, DP off) in `out/<dp|no-dp>/`; writes `out/canaries.json`; returns the result."""
    config = config or CanaryAuditConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if base_model is None:
        base_model = _build_base_model(out / "base-model", seed=config.seed)
    rng = random.Random(config.seed)
    planted = [random_secret(rng, config.secret_length) for _ in range(config.canaries)]
    held_out = [random_secret(rng, config.secret_length) for _ in range(config.canaries)]
    candidates = [random_secret(rng, config.secret_length) for _ in range(config.candidates)]
    sides = []
    for dp in dp_sides:
        log(f"[canaries] training with DP {'on' if dp else 'off'} ...")
        side = _run_side(
            out / ("dp" if dp else "no-dp"),
            config,
            str(base_model),
            dp=dp,
            planted=planted,
            held_out=held_out,
            candidates=candidates,
        )
        log(
            f"[canaries] DP {'on' if dp else 'off'}: mean exposure {side.mean_exposure_planted:.2f} bits planted, "
            f"{side.mean_exposure_held_out:.2f} held out; ε lower bound {side.epsilon_lower_bound:.2f} "
            f"(claimed {side.claimed_epsilon:.3g}); {side.seconds:.0f}s"
        )
        sides.append(side)
    audit = CanaryAudit(config=config, max_exposure=math.log2(config.candidates + 1), sides=sides)
    (out / "canaries.json").write_text(json.dumps(audit.as_dict(), indent=2) + "\n")
    return audit


def format_audit(audit: CanaryAudit) -> str:
    lines = [
        f"canary audit: {audit.config.canaries} planted + {audit.config.canaries} held-out canaries, "
        f"{audit.config.candidates} candidates each (max exposure {audit.max_exposure:.2f} bits)"
    ]
    for s in audit.sides:
        claimed = "inf (no DP)" if math.isinf(s.claimed_epsilon) else f"{s.claimed_epsilon:.3f}"
        lines.append(
            f"  DP {'on ' if s.dp else 'off'} (σ={s.noise_multiplier:.3g}, each canary x{s.repeats}): exposure "
            f"planted {s.mean_exposure_planted:.2f} / held out {s.mean_exposure_held_out:.2f} bits; "
            f"{s.correct_guesses}/{s.guesses} membership guesses right -> ε >= {s.epsilon_lower_bound:.2f} "
            f"({CONFIDENCE:.0%}, δ=0 bound); claimed ε = {claimed} at δ={s.delta:g}"
        )
    return "\n".join(lines)


def _build_base_model(out: Path, *, seed: int) -> Path:
    from silo.basemodel import build_base_model
    from silo.demo import DEMO_HIDDEN_SIZE, TOKENIZER_CORPUS_SEED
    from silo.synthetic import make_clinical_notes

    if (out / "config.json").exists():
        return out
    texts = [r.text for r in make_clinical_notes(200, seed=TOKENIZER_CORPUS_SEED)]
    return build_base_model(out, texts, hidden_size=DEMO_HIDDEN_SIZE, seed=seed)


def _site_toml(base_model: str, config: CanaryAuditConfig, *, dp: bool) -> str:
    """The canary site's TOML, built from config objects: DP-SGD with σ derived for the planned rounds
    (budget = target), or DP off with the infinite budget that acknowledges it."""
    from common.config import (
        DataConfig,
        LoraSettings,
        ModelConfig,
        PrivacyConfig,
        SiteConfig,
        SiteSection,
        TaskConfig,
        TrainingConfig,
    )

    privacy = (
        PrivacyConfig(
            max_grad_norm=config.max_grad_norm,
            target_epsilon=config.target_epsilon,
            target_delta=config.delta,
            planned_rounds=config.rounds,
            budget_epsilon=config.target_epsilon,
            budget_delta=config.delta,
        )
        if dp
        else _without_dp(config)
    )
    site = SiteConfig(
        site=SiteSection(id="canary-site"),
        data=DataConfig(holdout_fraction=0.1, seed=config.seed),
        task=TaskConfig(),
        model=ModelConfig(base=base_model, max_length=64),
        lora=LoraSettings(target_modules=("q_proj", "k_proj", "v_proj", "o_proj", "lm_head")),
        training=TrainingConfig(
            epochs=config.epochs,
            batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            threads=1,
            seed=config.seed,
        ),
        privacy=privacy,
    )
    return site.to_toml()


def _without_dp(config: CanaryAuditConfig) -> Any:
    """The DP-off side's privacy section; the warning it raises is for the site's log when it loads."""
    import warnings

    from common.config import PrivacyConfig

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return PrivacyConfig(
            enabled=False, max_grad_norm=config.max_grad_norm, budget_epsilon=math.inf, budget_delta=config.delta
        )


def _run_side(
    out: Path,
    config: CanaryAuditConfig,
    base_model: str,
    *,
    dp: bool,
    planted: list[str],
    held_out: list[str],
    candidates: list[str],
) -> SideResult:
    import time

    from client.ingest import load_site_records, split_records
    from common.config import load_site_config
    from silo.synthetic import make_clinical_notes

    t0 = time.perf_counter()
    repeats = 1 if dp else config.repeats_without_dp
    (out / "data").mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = [
        {"text": r.text} for r in make_clinical_notes(config.filler_records, seed=config.seed + 1)
    ]
    # `copy` makes each copy a distinct record for the site's content-keyed hold-out split; not trained on.
    records += [{"text": canary_text(s), "copy": k} for s in planted for k in range(repeats)]
    random.Random(config.seed).shuffle(records)
    with (out / "data" / "records.jsonl").open("w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec) + "\n")
    cfg_path = out / "site.toml"
    cfg_path.write_text(_site_toml(base_model, config, dp=dp))
    cfg = load_site_config(cfg_path)

    # Which canaries the site will train on: the site's own split of the same records.
    split = split_records(
        load_site_records(cfg.data_dir, cfg.data, cfg.task),
        holdout_fraction=cfg.data.holdout_fraction,
        seed=cfg.data.seed,
    )
    trained_texts = {r["text"] for r in split.train}
    members = [s for s in planted if canary_text(s) in trained_texts]
    non_members = held_out + [s for s in planted if canary_text(s) not in trained_texts]

    model, tokenizer = _train_rounds(cfg_path, cfg, rounds=config.rounds)
    scores = _log_perplexities(model, tokenizer, members + non_members + candidates)
    cand = scores[len(members) + len(non_members) :]

    def exposure(score: float) -> float:
        rank = 1 + sum(c < score for c in cand)
        return math.log2(len(cand) + 1) - math.log2(rank)

    member_scores = scores[: len(members)]
    non_member_scores = scores[len(members) : len(members) + len(non_members)]
    # Guess "planted" for the len(members) least surprising canaries, "held out" for the rest.
    ranked = sorted([(s, True) for s in member_scores] + [(s, False) for s in non_member_scores])
    guesses = len(ranked)
    correct = sum(is_member for _, is_member in ranked[: len(members)]) + sum(
        not is_member for _, is_member in ranked[len(members) :]
    )
    ledger = [json.loads(x) for x in (out / "state" / "privacy_ledger.jsonl").read_text().splitlines()]
    claimed = float(ledger[-1]["epsilon_total"])
    return SideResult(
        dp=dp,
        claimed_epsilon=claimed,
        delta=config.delta,
        noise_multiplier=float(ledger[-1]["noise_multiplier"]),
        planted=len(members),
        held_out=len(non_members),
        repeats=repeats,
        exposure_planted=[exposure(s) for s in member_scores],
        exposure_held_out=[exposure(s) for s in non_member_scores],
        correct_guesses=correct,
        guesses=guesses,
        epsilon_lower_bound=one_run_epsilon_lower_bound(correct, guesses),
        seconds=time.perf_counter() - t0,
    )


def _train_rounds(cfg_path: Path, cfg: Any, *, rounds: int) -> tuple[Any, Any]:
    """`rounds` calls of the site's real round handler; each round starts from the last update."""
    from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from client.site import handle_train
    from common.adapter import adapter_state, arrays_to_state, load_adapter_state, state_to_arrays
    from common.errors import FederationFailed
    from common.model import load_lora_model, load_tokenizer
    from common.reply import reply_parts

    # A ClientApp process has these set by Flower; replies read them.
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    model = load_lora_model(cfg.model_source(), cfg.lora, cfg.task)
    arrays = state_to_arrays(adapter_state(model))
    context = Context(
        run_id=1, node_id=1, node_config={"site-config": str(cfg_path)}, state=RecordDict(), run_config={}
    )
    for rnd in range(1, rounds + 1):
        content = RecordDict(
            {"arrays": arrays, "config": ConfigRecord({"server-round": rnd, "run-id": "canary-audit"})}
        )
        reply = handle_train(Message(content, dst_node_id=1, message_type=MessageType.TRAIN), context)
        if reply.has_error():
            raise FederationFailed(f"canary audit round {rnd}: the site refused: {reply.error.reason}")
        # The site sends its adapter as a delta from the one it received (common/transport.py, fp32 here).
        sent = reply_parts(reply.content).arrays
        if sent is None:
            raise FederationFailed(f"canary audit round {rnd}: the site's reply carries no update")
        delta = arrays_to_state(sent)
        arrays = state_to_arrays({k: v + delta[k] if k in delta else v for k, v in arrays_to_state(arrays).items()})
    load_adapter_state(model, arrays_to_state(arrays))
    return model, load_tokenizer(cfg.model_source())


def _log_perplexities(model: Any, tokenizer: Any, secrets: list[str]) -> list[float]:
    """Sum of token NLLs of each `canary_text(secret)`, encoded as training encodes it (bos + text + eos)."""
    import torch
    import torch.nn.functional as F

    model.eval()
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    seqs = [
        bos + tokenizer.encode(canary_text(s), add_special_tokens=False) + [tokenizer.eos_token_id] for s in secrets
    ]
    out: list[float] = []
    with torch.no_grad():
        for i in range(0, len(seqs), 128):
            chunk = seqs[i : i + 128]
            width = max(len(s) for s in chunk)
            ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for j, s in enumerate(chunk):
                ids[j, : len(s)] = torch.tensor(s)
                mask[j, : len(s)] = 1
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            nll = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none") * mask[:, 1:]
            out.extend(nll.sum(1).tolist())
    return out
