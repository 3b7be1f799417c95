"""A distributed-noise round at the site: one DP-FedSGD step as integers, with this site's noise share.

    sample   each training record with probability q (Poisson, OS-seeded generator)
    clip     each sampled record's gradient of the trainable (LoRA) parameters to `max_grad_norm`
             (per-record gradients from Opacus' GradSampleModule, as DP-SGD computes them)
    scale    by -learning_rate / (q N) / grid_step: the record's share of one SGD step's delta, in grid
             units (its L2 norm <= `l2_clip`)
    round    each record on its own, conditionally (common/distributed_dp.py): adding or removing one
             record moves the sum by at most Δ2 (L2) and Δ1 (L1), whatever the others drew
    noise    add a Skellam share of variance `share_variance` per coordinate

With a prefix cache (client/prefix_cache.py: every trained parameter above a layer, `[training] prefix_cache`)
the per-record gradients come from the cached states of the layers below, computed once per data version:
the same parameters and the same gradients, at the cost of the top layers only.

The result is the site's integer vector, keyed like the adapter; SecAgg (client/secagg.py
`mask_integers`) masks it. Nothing here reads a number from the coordinator except the grid step,
and the noise share follows the site's own `[privacy]` settings (see `plan_distributed_round`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from peft import get_peft_model_state_dict

from client.prefix_cache import PrefixCache
from client.privacy import planned_sample_rate
from client.train import per_sample_loss
from common.config import PrivacyConfig, SiteConfig, TaskConfig
from common.distributed_dp import DistributedRound, conditional_round, plan_distributed_round, skellam_noise
from common.secagg import Arrays

PHYSICAL_BATCH = 32
"""Records per forward/backward pass: per-record gradients of a 100k-value adapter take 32 x 0.8 MB."""


def adapter_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The trainable parameters under their adapter-state keys (PEFT's saved names). Saved tensors that
    do not train (FFA-LoRA's frozen A) are left out: their step is zero."""
    by_storage = {p.data_ptr(): p for p in model.parameters() if p.requires_grad}
    state = get_peft_model_state_dict(model, save_embedding_layers=False)
    params = {key: by_storage[t.data_ptr()] for key, t in state.items() if t.data_ptr() in by_storage}
    if len(params) != len(by_storage):
        raise ValueError("a trainable parameter is not in the adapter's saved tensors")
    return params


def adapter_shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """Every saved adapter tensor's shape: what the masked vector carries, trained or not."""
    return {k: tuple(t.shape) for k, t in get_peft_model_state_dict(model, save_embedding_layers=False).items()}


def distributed_step(
    model: torch.nn.Module,
    dataset: torch.utils.data.TensorDataset,
    *,
    task: TaskConfig,
    plan: DistributedRound,
    learning_rate: float,
    max_grad_norm: float,
    device: torch.device,
    rng: np.random.Generator,
    prefix: PrefixCache | None = None,
) -> tuple[Arrays, int]:
    """The site's noisy integer vector for this round and how many records the Poisson draw took.
    `prefix` (built for `model` and `dataset`): gradients from its top layers and cached states instead."""
    from opacus import GradSampleModule

    n = len(dataset)
    trained, rows_of = (model, dataset) if prefix is None else (prefix.top, prefix.dataset)
    chosen = np.flatnonzero(rng.random(n) < plan.sample_rate)
    params = adapter_parameters(model)
    keys = sorted(params)
    sizes = [params[k].numel() for k in keys]
    total = np.zeros(sum(sizes), dtype=np.int64)
    scale = -learning_rate / (plan.sample_rate * n) / plan.grid_step
    wrapped = GradSampleModule(trained, batch_first=True, loss_reduction="sum")
    try:
        wrapped.train()
        for start in range(0, len(chosen), PHYSICAL_BATCH):
            rows = torch.as_tensor(chosen[start : start + PHYSICAL_BATCH])
            batch = tuple(t[rows].to(device) for t in rows_of.tensors)
            per_sample_loss(wrapped, batch, task).sum().backward()
            grads = torch.cat([_take_grad_sample(params[k]).flatten(1) for k in keys], dim=1).double()
            norms = grads.norm(dim=1, keepdim=True)
            clipped = grads * torch.clamp(max_grad_norm / (norms + 1e-12), max=1.0)
            for row in (clipped * scale).cpu().numpy():
                total += conditional_round(row, bound=plan.l2_sensitivity, rng=rng)
    finally:
        wrapped._close()
        for p in params.values():
            p.grad = None
    total += skellam_noise(total.size, variance=plan.share_variance, rng=rng)
    out: Arrays = {k: np.zeros(shape, dtype=np.int64) for k, shape in adapter_shapes(model).items()}
    offset = 0
    for key, size in zip(keys, sizes, strict=True):
        out[key] = total[offset : offset + size].reshape(tuple(params[key].shape))
        offset += size
    return out, len(chosen)


def _take_grad_sample(p: Any) -> torch.Tensor:
    grad_sample = p.grad_sample
    p.grad_sample = None
    return grad_sample


def plan_site_round(
    cfg: SiteConfig, model: torch.nn.Module, dataset_size: int, *, grid_step: float
) -> DistributedRound:
    """This site's distributed round from its own `[privacy]` and `[training]` and the SecAgg grid, for the
    adapter `model` trains (`plan_round_for_records`)."""
    return plan_round_for_records(
        cfg.privacy,
        dataset_size=dataset_size,
        batch_size=cfg.training.batch_size,
        learning_rate=cfg.training.learning_rate,
        dim=sum(p.numel() for p in adapter_parameters(model).values()),
        grid_step=grid_step,
    )


def plan_round_for_records(
    privacy: PrivacyConfig, *, dataset_size: int, batch_size: int, learning_rate: float, dim: int, grid_step: float
) -> DistributedRound:
    """A distributed round over `dataset_size` training records (batch = expected records per round) for an
    adapter of `dim` trained values: sensitivities first, then σ that spends `target_epsilon` over
    `planned_rounds` on the figure `distributed_budget` names, then the noise share."""
    sample_rate = planned_sample_rate(dataset_size=dataset_size, batch_size=min(batch_size, dataset_size))

    def plan(sigma: float) -> DistributedRound:
        return plan_distributed_round(
            noise_multiplier=sigma,
            min_honest=privacy.distributed_min_honest,
            budget_figure=privacy.distributed_budget,
            learning_rate=learning_rate,
            max_grad_norm=privacy.max_grad_norm,
            expected_batch=sample_rate * dataset_size,
            grid_step=grid_step,
            dim=dim,
            sample_rate=sample_rate,
        )

    unit = plan(1.0)  # the sensitivities do not depend on σ
    return plan(
        privacy.resolve_distributed_noise_multiplier(
            sample_rate=sample_rate, l2_sensitivity=unit.l2_sensitivity, l1_sensitivity=unit.l1_sensitivity
        )
    )
