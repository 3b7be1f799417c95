"""A distributed-noise round at the site: the integer step is DP-FedSGD's clipped step, the noise share
follows the site's own settings whatever the coordinator sends, and too few sites fail closed."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from flwr.app import RecordDict

from client.distributed_dp import adapter_parameters, distributed_step
from client.prepare import encode_records
from client.scrub import build_scrubber, scrub_records
from client.secagg import STATE, accept_shares, mask_integers, reveal_shares, setup, share_keys
from client.train import per_sample_loss
from common.accounting import BudgetFigure
from common.config import DataConfig, LoraSettings, TaskConfig, TaskType
from common.config.scrub import ScrubConfig
from common.distributed_dp import fresh_numpy_generator, plan_distributed_round
from common.model import load_lora_model
from common.secagg import SecAggFailed

CAUSAL_LM = TaskConfig(type=TaskType.CAUSAL_LM)
TEXTS = [
    "Outpatient review: inhaler technique checked, asthma well controlled.",
    "Second visit for eczema; emollients continued, steroid cream reduced.",
    "Telephone consult about vaccine timing for the winter season.",
    "Ankle sprain reviewed, swelling down, return to sport in two weeks.",
    "Repeat prescription issued after medication review with pharmacist.",
    "Hearing test booked after complaint of ringing in the left ear.",
]
LR, CLIP, GRID = 0.05, 1.0, 1e-6


@pytest.fixture(scope="module")
def dataset(tokenizer):
    scrubbed = scrub_records([{"text": t} for t in TEXTS], build_scrubber(ScrubConfig(fields=("text",))))
    return encode_records(scrubbed.records, tokenizer, data=DataConfig(), task=CAUSAL_LM, max_length=48)


def _model(base_model_dir):
    model = load_lora_model(str(base_model_dir), LoraSettings(r=4, alpha=8), CAUSAL_LM, seed=0)
    gen = torch.Generator().manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data = torch.randn(p.shape, generator=gen) * 0.05  # a fresh adapter's B is zero: no A gradient
    return model


def _plan(dim: int, *, sigma: float = 1.0, t: int = 2, grid: float = GRID, q: float = 1.0, n: int = len(TEXTS)):
    return plan_distributed_round(
        noise_multiplier=sigma,
        min_honest=t,
        budget_figure=BudgetFigure.SUM,
        learning_rate=LR,
        max_grad_norm=CLIP,
        expected_batch=q * n,
        grid_step=grid,
        dim=dim,
        sample_rate=q,
    )


def test_integer_step_is_the_clipped_sgd_step_within_rounding(base_model_dir, dataset) -> None:
    model = _model(base_model_dir)
    params = adapter_parameters(model)
    dim = sum(p.numel() for p in params.values())
    # A vanishing noise share: Poisson(5e-13) is nonzero somewhere among ~10^4 coordinates with
    # probability < 1e-8.
    plan = _plan(dim, sigma=1e-6 / math.sqrt(dim))
    integers, taken = distributed_step(
        model,
        dataset,
        task=CAUSAL_LM,
        plan=plan,
        learning_rate=LR,
        max_grad_norm=CLIP,
        device=torch.device("cpu"),
        rng=fresh_numpy_generator(),
    )
    assert taken == len(TEXTS)  # q = 1 takes every record
    expected = {k: torch.zeros_like(p, dtype=torch.float64) for k, p in params.items()}
    for i in range(len(TEXTS)):
        model.zero_grad()
        per_sample_loss(model, tuple(t[i : i + 1] for t in dataset.tensors), CAUSAL_LM).sum().backward()
        norm = math.sqrt(sum(float(p.grad.double().square().sum()) for p in params.values()))
        for k, p in params.items():
            expected[k] -= LR / len(TEXTS) * p.grad.double() * min(1.0, CLIP / norm)
    for k, want in expected.items():
        got = integers[k].astype(np.float64) * GRID
        # Each record's coordinate rounds by less than one grid step; six records.
        assert np.abs(got - want.numpy()).max() <= len(TEXTS) * GRID
    assert max(float(np.abs(want.numpy()).max()) for want in expected.values()) > 100 * GRID  # not all zero


def test_noise_share_in_adapter_units_does_not_depend_on_the_coordinator_grid() -> None:
    # The coordinator chooses only the grid step; Δ2 and the share scale with it, so the share's std in
    # adapter units never falls below sigma * (lr * clip / batch) / sqrt(t), what the site's settings say.
    floor = 1.0 * LR * CLIP / 6 / math.sqrt(2)
    for grid in (1e-9, 1e-6, 1e-4):
        plan = _plan(50_000, grid=grid)
        assert math.sqrt(plan.share_variance) * grid >= floor * (1 - 1e-12)
        assert plan.l2_sensitivity >= plan.l2_clip


def test_skellam_share_has_the_planned_variance() -> None:
    plan = _plan(10_000, sigma=0.5)
    from common.distributed_dp import skellam_noise

    draws = skellam_noise(200_000, variance=plan.share_variance, rng=fresh_numpy_generator())
    # Sample variance of 2e5 draws: relative sd sqrt(2 / 2e5) ~ 0.0032 (near-Gaussian); 0.03 is ~9 sd, a
    # false failure well below 1e-6.
    assert draws.dtype == np.int64 and abs(draws.var() / plan.share_variance - 1) < 0.03
    assert abs(draws.mean()) < 9 * math.sqrt(plan.share_variance / 200_000)


RUN, RND = "run-d", 3


def _sites(n: int) -> list[RecordDict]:
    """n sites through setup and share-keys; each holds the others' shares (stage mask)."""
    states = [RecordDict() for _ in range(n)]
    params = {"run-id": RUN, "round": RND, "threshold": 2, "clip": 1.0, "quantization-range": 1 << 22}
    keys = [setup(st, {**params, "modulus": 1 << 32}, node_id=i + 1) for i, st in enumerate(states)]
    listing = {
        "run-id": RUN,
        "round": RND,
        "stage": "share-keys",
        "nodes": list(range(1, n + 1)),
        "pk1": [k["pk1"] for k in keys],
        "pk2": [k["pk2"] for k in keys],
    }
    sent = [share_keys(st, listing) for st in states]
    for i, st in enumerate(states):
        srcs = [j + 1 for j in range(n) if j != i]
        ctxts = [sent[j]["ctxts"][sent[j]["dsts"].index(i + 1)] for j in range(n) if j != i]
        accept_shares(st, {"run-id": RUN, "round": RND, "stage": "mask", "srcs": srcs, "ctxts": ctxts})
    return states


def test_a_key_list_shorter_than_t_is_refused_before_masking() -> None:
    states = _sites(2)
    with pytest.raises(SecAggFailed, match="distributed_min_honest 3"):
        mask_integers(states[0], integers={"w": np.zeros(4, np.int64)}, min_honest=3)
    assert not states[0].config_records[STATE].get("masked")


def test_too_few_survivors_reveal_nothing_and_the_secrets_stay_unrevealed() -> None:
    states = _sites(3)
    for st in states:
        mask_integers(st, integers={"w": np.arange(4, dtype=np.int64)}, min_honest=3)
    request = {"run-id": RUN, "round": RND, "stage": "unmask", "active": [1, 2], "dead": [3]}
    for st in states[:2]:
        with pytest.raises(SecAggFailed, match="fewer than distributed_min_honest 3"):
            reveal_shares(st, request)
    # Nothing revealed and nothing erased: the coordinator cannot ask again for a smaller t either.
    assert all(STATE in st.config_records for st in states[:2])
    with pytest.raises(SecAggFailed, match="fewer than distributed_min_honest 3"):
        reveal_shares(states[0], {**request, "min-honest": 2})


def test_a_vector_that_could_wrap_the_modulus_is_refused() -> None:
    states = _sites(2)
    big = np.array([1 << 30], dtype=np.int64)  # 2 sites x 2^30 reaches M / 2 at M = 2^32
    with pytest.raises(SecAggFailed, match="beyond M"):
        mask_integers(states[0], integers={"w": big}, min_honest=2)


def test_masked_integer_vectors_sum_to_the_sites_total() -> None:
    from common.secagg import add_masks, from_field, prg_mask, recover_secret, reduce_field

    states = _sites(3)
    vectors = [np.array([5, -7, 0, 123_456], dtype=np.int64) * (i + 1) for i in range(3)]
    masked = [mask_integers(st, integers={"w": v}, min_honest=3)[0] for st, v in zip(states, vectors, strict=True)]
    assert all(m["w"].dtype == np.uint32 for m in masked)
    total = {"w": np.zeros(4, np.uint32)}
    for m in masked:
        total = add_masks(total, m, sign=+1)
    request = {"run-id": RUN, "round": RND, "stage": "unmask", "active": [1, 2, 3], "dead": []}
    replies = [reveal_shares(st, request) for st in states]
    for node in (1, 2, 3):
        shares = [r["shares"][list(r["nodes"]).index(node)] for r in replies]
        seed = recover_secret([bytes(s) for s in shares], threshold=2)
        total = add_masks(total, prg_mask(seed, {"w": (4,)}, 1 << 32), sign=-1)
    assert from_field(reduce_field(total, 1 << 32)["w"], 1 << 32).tolist() == sum(vectors).tolist()


def test_a_grid_too_fine_or_too_coarse_is_refused_before_anything_is_spent() -> None:
    # Too fine: one record would be ~1e296 integers and overflow int64; too coarse: under one integer.
    for grid in (1e-300, 1.0):
        with pytest.raises(SecAggFailed, match="grid step"):
            _plan(50_000, grid=grid)


def test_frozen_adapter_tensors_get_a_zero_step_and_no_noise(base_model_dir, dataset) -> None:
    model = _model(base_model_dir)
    for name, p in model.named_parameters():
        if "lora_A" in name:
            p.requires_grad_(False)  # FFA-LoRA: A frozen, saved, never trained
    params = adapter_parameters(model)
    assert params and not any("lora_A" in k for k in params)
    plan = _plan(sum(p.numel() for p in params.values()))
    integers, _ = distributed_step(
        model,
        dataset,
        task=CAUSAL_LM,
        plan=plan,
        learning_rate=LR,
        max_grad_norm=CLIP,
        device=torch.device("cpu"),
        rng=fresh_numpy_generator(),
    )
    frozen = [k for k in integers if "lora_A" in k]
    assert frozen and all(not integers[k].any() for k in frozen)
    assert all(integers[k].any() for k in params)  # noise of variance ~3.5e7 per value on every trained one
