"""The site's side of secure aggregation (common/secagg.py): keys, shares, masking, revealing shares.

One round, as the coordinator drives it:

    setup       fresh X25519 keys for this round: one for pairwise masks, one to encrypt shares
    share-keys  a fresh self-mask seed; Shamir shares of it and of the mask key, one per site, each
                encrypted for its site
    mask        (inside the train handler, AFTER plan -> train -> ledger record) keep the shares
                addressed to this site, then clip, quantise and mask the update
    unmask      for each surviving site its self-mask seed share, for each dropped site its mask
                key share; never both for one site, and only once per round

The secrets stay in the SuperNode's `context.state` (site-local, kept across the messages of a run)
and are erased when the round's shares are revealed. Every stage checks it follows the one before
for the same run and round, so a coordinator cannot replay a stage to learn more.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from typing import Any, cast

import numpy as np
from flwr.app import ConfigRecord, RecordDict

from common.distributed_dp import check_wrap
from common.secagg import (
    SECRET_BYTES,
    STAGE_MASK,
    STAGE_SETUP,
    STAGE_SHARE_KEYS,
    Arrays,
    SecAggFailed,
    add_masks,
    agree,
    check_modulus,
    generate_key,
    open_shares,
    pairwise_seed,
    prg_mask,
    quantize_delta,
    reduce_field,
    seal_shares,
    shapes_of,
    share_secret,
    to_field,
)

# The site's per-run SecAgg state, a ConfigRecord in `context.state`.
STATE = "secagg-state"
SHARE_LABEL = b"share-encryption"


def _state(state: RecordDict) -> MutableMapping[str, Any]:
    if STATE not in state.config_records:
        raise SecAggFailed("no secure aggregation keys at this site for this round (setup never ran)")
    return cast(MutableMapping[str, Any], state.config_records[STATE])


def _expect(st: Mapping[str, Any], request: Mapping[str, Any], stage: str) -> None:
    """The request is for the run and round of the keys held, and the stage held is the one before."""
    run_id, rnd = str(request.get("run-id", "")), int(request.get("round", -1))
    if st.get("run-id") != run_id or st.get("round") != rnd:
        raise SecAggFailed(
            f"{request.get('stage')!r} for run {run_id!r} round {rnd}, but this site's keys are for "
            f"run {st.get('run-id')!r} round {st.get('round')}"
        )
    if st.get("stage") != stage:
        raise SecAggFailed(f"stage {request.get('stage')!r} cannot follow stage {st.get('stage')!r}")


def setup(state: RecordDict, request: Mapping[str, Any], *, node_id: int) -> ConfigRecord:
    """Fresh keys for this round; replaces whatever an earlier round left."""
    modulus = int(request["modulus"])
    check_modulus(modulus)
    threshold = int(request["threshold"])
    if threshold < 2:
        raise SecAggFailed(f"a reconstruction threshold below 2 reveals single updates, got {threshold}")
    sk1, pk1 = generate_key()
    sk2, pk2 = generate_key()
    state.config_records[STATE] = ConfigRecord(
        {
            "stage": STAGE_SETUP,
            "run-id": str(request["run-id"]),
            "round": int(request["round"]),
            "node": int(node_id),
            "threshold": threshold,
            "clip": float(request["clip"]),
            "quantization-range": int(request["quantization-range"]),
            "modulus": modulus,
            "sk1": sk1,
            "pk1": pk1,
            "sk2": sk2,
            "pk2": pk2,
        }
    )
    return ConfigRecord({"pk1": pk1, "pk2": pk2})


def share_keys(state: RecordDict, request: Mapping[str, Any]) -> ConfigRecord:
    """Shares of a fresh self-mask seed and of the mask key, each encrypted for the site it is for."""
    st = _state(state)
    _expect(st, request, STAGE_SETUP)
    nodes = [int(n) for n in request["nodes"]]
    pk1s, pk2s = list(request["pk1"]), list(request["pk2"])
    me, threshold = int(st["node"]), int(st["threshold"])
    if len(set(nodes)) != len(nodes) or not len(nodes) == len(pk1s) == len(pk2s):
        raise SecAggFailed("the key list repeats a site or its lists differ in length")
    if me not in nodes or pk1s[nodes.index(me)] != st["pk1"] or pk2s[nodes.index(me)] != st["pk2"]:
        raise SecAggFailed("the coordinator's key list does not carry this site's own keys")
    if len(nodes) < threshold:
        raise SecAggFailed(f"{len(nodes)} site(s) in the key list, fewer than the threshold {threshold}")
    if len(set(pk1s) | set(pk2s)) != 2 * len(nodes):
        raise SecAggFailed("two sites in the key list share a public key")
    seed = os.urandom(SECRET_BYTES)
    seed_shares = share_secret(seed, threshold=threshold, shares=len(nodes))
    key_shares = share_secret(bytes(st["sk1"]), threshold=threshold, shares=len(nodes))
    run_id, rnd = str(st["run-id"]), int(st["round"])
    dsts, ctxts = [], []
    for i, node in enumerate(nodes):
        if node == me:
            continue
        key = agree(bytes(st["sk2"]), pk2s[i], label=SHARE_LABEL)
        ctxts.append(
            seal_shares(
                key, run_id=run_id, rnd=rnd, src=me, dst=node, seed_share=seed_shares[i], key_share=key_shares[i]
            )
        )
        dsts.append(node)
    own = nodes.index(me)
    st.update(
        {
            "stage": STAGE_SHARE_KEYS,
            "seed": seed,
            "nodes": nodes,
            "pk1s": pk1s,
            "pk2s": pk2s,
            "held-nodes": [me],
            "held-seed-shares": [seed_shares[own]],
            "held-key-shares": [key_shares[own]],
        }
    )
    return ConfigRecord({"dsts": dsts, "ctxts": ctxts})


def accept_shares(state: RecordDict, request: Mapping[str, Any]) -> None:
    """Decrypt and keep the shares the other sites sent this site. Runs before training, so a broken
    exchange costs no privacy budget."""
    st = _state(state)
    _expect(st, request, STAGE_SHARE_KEYS)
    srcs, ctxts = [int(s) for s in request.get("srcs", [])], list(request.get("ctxts", []))
    nodes, pk2s, me = [int(n) for n in st["nodes"]], list(st["pk2s"]), int(st["node"])
    if len(srcs) != len(ctxts) or len(set(srcs)) != len(srcs) or me in srcs or not set(srcs) <= set(nodes):
        raise SecAggFailed("the shares forwarded to this site are malformed or from unknown sites")
    if len(srcs) + 1 < int(st["threshold"]):
        raise SecAggFailed(f"shares from {len(srcs)} other site(s): too few for threshold {st['threshold']}")
    held_nodes, seed_shares, key_shares = [me], list(st["held-seed-shares"]), list(st["held-key-shares"])
    for src, ctxt in zip(srcs, ctxts, strict=True):
        key = agree(bytes(st["sk2"]), pk2s[nodes.index(src)], label=SHARE_LABEL)
        seed_share, key_share = open_shares(key, ctxt, run_id=str(st["run-id"]), rnd=int(st["round"]), src=src, dst=me)
        held_nodes.append(src)
        seed_shares.append(seed_share)
        key_shares.append(key_share)
    st.update(
        {
            "stage": STAGE_MASK,
            "held-nodes": held_nodes,
            "held-seed-shares": seed_shares,
            "held-key-shares": key_shares,
        }
    )


def mask_update(
    state: RecordDict, *, update: Arrays, global_arrays: Arrays, weight: int
) -> tuple[Arrays, dict[str, Any]]:
    """The masked, weighted, quantised, clipped delta, and what the site declares about it.

    Masked with the self mask and a pairwise mask with every site whose shares arrived (the
    coordinator forwarded exactly those, so it knows which pairs to cancel)."""
    st = _masking_state(state)
    clip, quantization_range, modulus = float(st["clip"]), int(st["quantization-range"]), int(st["modulus"])
    delta = {k: update[k].astype(np.float64) - w.astype(np.float64) for k, w in global_arrays.items()}
    y, clipped = quantize_delta(delta, clip=clip, quantization_range=quantization_range, weight=weight, modulus=modulus)
    masked = _add_masks(st, y)
    return masked, {**_declaration(st, weight=weight), "clipped": bool(clipped)}


def grid_step(state: RecordDict) -> float:
    """The value of one integer of the sum in adapter units (2 clip / quantization range): the one
    number a distributed-noise round takes from the coordinator."""
    st = _state(state)
    return 2.0 * float(st["clip"]) / int(st["quantization-range"])


def key_list_size(state: RecordDict) -> int:
    """Sites whose masks this site's vector carries, itself included (after `accept_shares`)."""
    return len(_state(state)["held-nodes"])


def mask_integers(state: RecordDict, *, integers: Arrays, min_honest: int) -> tuple[Arrays, dict[str, Any]]:
    """A distributed-noise round's integer vector (client/distributed_dp.py), masked, with its
    declaration (weight 1: the coordinator averages the sites' steps). Refused when the key list has
    fewer than `min_honest` sites, or when the vector could wrap around the modulus in their sum; the
    site's `min_honest` is kept so that the unmask stage refuses a survivor list shorter than it."""
    st = _masking_state(state)
    modulus, sites = int(st["modulus"]), len(st["held-nodes"])
    if sites < min_honest:
        raise SecAggFailed(f"{sites} site(s) in this round's key list, fewer than distributed_min_honest {min_honest}")
    for values in integers.values():
        check_wrap(values, modulus=modulus, sites=sites)
    masked = _add_masks(st, {k: to_field(v, modulus) for k, v in integers.items()})
    st["min-honest"] = int(min_honest)
    return masked, {**_declaration(st, weight=1), "clipped": False, "noise": "distributed", "min_honest": min_honest}


def _masking_state(state: RecordDict) -> MutableMapping[str, Any]:
    st = _state(state)
    if st.get("stage") != STAGE_MASK or st.get("masked"):
        raise SecAggFailed(f"cannot mask at stage {st.get('stage')!r}")
    return st


def _add_masks(st: MutableMapping[str, Any], y: Arrays) -> Arrays:
    """`y` (field elements) plus the self mask and the pairwise masks with every site whose shares arrived."""
    modulus = int(st["modulus"])
    shapes = shapes_of(y)
    y = add_masks(y, prg_mask(bytes(st["seed"]), shapes, modulus), sign=+1)
    me = int(st["node"])
    nodes, pk1s = [int(n) for n in st["nodes"]], list(st["pk1s"])
    for other in (int(n) for n in st["held-nodes"]):
        if other == me:
            continue
        mask = prg_mask(pairwise_seed(bytes(st["sk1"]), pk1s[nodes.index(other)]), shapes, modulus)
        y = add_masks(y, mask, sign=+1 if me > other else -1)
    st["masked"] = True
    return reduce_field(y, modulus)


def _declaration(st: MutableMapping[str, Any], *, weight: int) -> dict[str, Any]:
    me = int(st["node"])
    return {
        "clip": float(st["clip"]),
        "quantization_range": int(st["quantization-range"]),
        "modulus": int(st["modulus"]),
        "weight": int(weight),
        "masked_with": sorted(int(n) for n in st["held-nodes"] if int(n) != me),
    }


def reveal_shares(state: RecordDict, request: Mapping[str, Any]) -> ConfigRecord:
    """Self-mask seed shares of the survivors, mask-key shares of the dropped; then erase the secrets.

    Refuses a request naming one site both survivor and dropped, leaving this site out of the
    survivors, or naming fewer survivors than the threshold: each would let the coordinator rebuild
    both secrets of one site, or unmask a site alone."""
    st = _state(state)
    _expect(st, request, STAGE_MASK)
    if not st.get("masked"):
        raise SecAggFailed("this site has not sent its masked update this round; it reveals nothing")
    active, dead = [int(n) for n in request["active"]], [int(n) for n in request["dead"]]
    me, threshold = int(st["node"]), int(st["threshold"])
    if set(active) & set(dead) or len(set(active)) != len(active) or len(set(dead)) != len(dead):
        raise SecAggFailed("a site is named twice in the unmask request")
    if me not in active:
        raise SecAggFailed("the unmask request leaves out this site, which did send its update")
    if len(active) < threshold:
        raise SecAggFailed(f"{len(active)} survivor(s), fewer than the threshold {threshold}")
    if len(active) < int(st.get("min-honest", 0)):
        # Distributed noise: the sum of fewer sites carries less noise than this site's ε assumes.
        raise SecAggFailed(f"{len(active)} survivor(s), fewer than distributed_min_honest {st['min-honest']}")
    held = [int(n) for n in st["held-nodes"]]
    seed_shares, key_shares = list(st["held-seed-shares"]), list(st["held-key-shares"])
    nodes, shares, kinds = [], [], []
    for n in active:
        if n in held:
            nodes.append(n)
            shares.append(seed_shares[held.index(n)])
            kinds.append("seed")
    for n in dead:
        if n in held:
            nodes.append(n)
            shares.append(key_shares[held.index(n)])
            kinds.append("key")
    # One reveal per round: the secrets go, so no second request can ask for the other kind.
    del state.config_records[STATE]
    return ConfigRecord({"nodes": nodes, "shares": shares, "kinds": kinds})
