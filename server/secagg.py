"""The coordinator's side of secure aggregation (common/secagg.py): it relays keys and encrypted
shares, collects masked updates, and with the survivors' shares removes the masks from their sum.

One round:

    setup       every connected site sends two public keys                      -> joined (U0)
    share-keys  every key to every site; each sends encrypted shares for all    -> sharing (U1)
    train       each site in U1 gets the shares addressed to it with the global adapter, trains
                as always, and replies with a masked vector (the train handler, client/site.py)
    unmask      the survivors (U2, whose masked vectors passed the gate) send the self-mask seed
                shares of U2 and the mask-key shares of U1 - U2 (dropped after key sharing)

What the coordinator can no longer check: a single site's update (norm, NaN, values). The sites
clip to `secagg.clip` before masking; the gate checks each masked vector's signature, its form
(adapter keys and shapes, integers in [0, modulus)) and the site's declared SecAgg parameters.
Assumes an honest-but-curious coordinator (as Flower's SecAgg+ workflow does): a coordinator that
lies to different sites about who dropped could unmask a site; SecAgg's consistency round against
that is not implemented.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from common.config import SecAggSection
from common.errors import UpdateRejected
from common.secagg import (
    ACTION,
    RECORD,
    STAGE_MASK,
    STAGE_SETUP,
    STAGE_SHARE_KEYS,
    STAGE_UNMASK,
    Arrays,
    SecAggFailed,
    add_masks,
    check_capacity,
    dequantize_sum,
    field_dtype,
    pairwise_seed,
    prg_mask,
    recover_secret,
    reduce_field,
    shapes_of,
    threshold_for,
)

MESSAGE_TYPE = f"{MessageType.QUERY}.{ACTION}"


def _query(nodes: Iterable[int], records: Mapping[int, ConfigRecord], rnd: int) -> list[Message]:
    return [
        Message(content=RecordDict({RECORD: records[n]}), dst_node_id=n, message_type=MESSAGE_TYPE, group_id=str(rnd))
        for n in nodes
    ]


def _reply_record(msg: Message) -> Mapping[str, Any]:
    if msg.has_error():
        raise SecAggFailed(msg.error.reason or f"error code {msg.error.code}")
    if RECORD not in msg.content.config_records:
        raise SecAggFailed(f"malformed secagg reply (records: {sorted(msg.content.keys())})")
    return msg.content.config_records[RECORD]


@dataclass
class SecAggRound:
    """One round's key material at the coordinator: public keys and the shares it relays (it cannot
    open them), and which sites fell out at which stage, with the reason."""

    cfg: SecAggSection
    run_id: str
    round: int
    threshold: int = 0
    public_keys: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)  # U0: node -> (pk1, pk2)
    sharing: list[int] = field(default_factory=list)  # U1
    relay: dict[int, list[tuple[int, bytes]]] = field(default_factory=dict)  # dst -> [(src, ciphertext)]
    dropped: list[dict[str, Any]] = field(default_factory=list)
    # Distributed noise (the sites' `[privacy] noise = "distributed"`): every masked vector declares it, with
    # weight 1 and the t its site counts on; the largest t must survive or nothing is unmasked.
    noise: dict[int, str] = field(default_factory=dict)
    min_honest: int = 0

    def _base(self, stage: str) -> dict[str, Any]:
        return {"stage": stage, "run-id": self.run_id, "round": self.round}

    def _drop(self, node: int, stage: str, reason: str) -> None:
        self.dropped.append({"node_id": node, "stage": stage, "reason": reason})

    def _need(self, have: int, minimum: int, stage: str) -> None:
        need = max(self.threshold, minimum, 2)
        if have < need:
            reasons = "; ".join(f"node {d['node_id']} at {d['stage']}: {d['reason']}" for d in self.dropped)
            raise SecAggFailed(
                f"round {self.round}: {have} site(s) left after secagg {stage}, need {need} ({reasons or 'no replies'})"
            )

    def exchange_keys(self, grid: Grid, nodes: list[int], *, min_sites: int, timeout: float) -> None:
        """Stages setup and share-keys; afterwards `sharing` holds the sites that can take part."""
        self.threshold = threshold_for(len(nodes), self.cfg.reconstruction_threshold)
        params = {
            **self._base(STAGE_SETUP),
            "threshold": self.threshold,
            "clip": float(self.cfg.clip),
            "quantization-range": int(self.cfg.quantization_range),
            "modulus": int(self.cfg.modulus),
        }
        replies = grid.send_and_receive(
            _query(nodes, {n: ConfigRecord(params) for n in nodes}, self.round), timeout=timeout
        )
        for msg in replies:
            node = msg.metadata.src_node_id
            try:
                rec = _reply_record(msg)
                pk1, pk2 = rec["pk1"], rec["pk2"]
                if not isinstance(pk1, bytes) or not isinstance(pk2, bytes):
                    raise SecAggFailed("public keys are not bytes")
                self.public_keys[node] = (pk1, pk2)
            except (SecAggFailed, KeyError) as err:
                self._drop(node, STAGE_SETUP, str(err))
        self._drop_silent(nodes, self.public_keys, STAGE_SETUP)
        joined = sorted(self.public_keys)
        self._need(len(joined), min_sites, STAGE_SETUP)

        keys = {
            **self._base(STAGE_SHARE_KEYS),
            "nodes": joined,
            "pk1": [self.public_keys[n][0] for n in joined],
            "pk2": [self.public_keys[n][1] for n in joined],
        }
        replies = grid.send_and_receive(
            _query(joined, {n: ConfigRecord(keys) for n in joined}, self.round), timeout=timeout
        )
        sent: dict[int, dict[int, bytes]] = {}
        for msg in replies:
            node = msg.metadata.src_node_id
            try:
                rec = _reply_record(msg)
                dsts, ctxts = [int(d) for d in rec["dsts"]], list(rec["ctxts"])
                # Every pair must mask both ways or the pairwise masks do not cancel: all or nothing.
                if sorted(dsts) != [n for n in joined if n != node] or len(ctxts) != len(dsts):
                    raise SecAggFailed("shares not addressed to exactly the other joined sites")
                sent[node] = dict(zip(dsts, ctxts, strict=True))
            except (SecAggFailed, KeyError, TypeError, ValueError) as err:
                self._drop(node, STAGE_SHARE_KEYS, str(err))
        self._drop_silent(joined, sent, STAGE_SHARE_KEYS)
        self.sharing = sorted(sent)
        self._need(len(self.sharing), min_sites, STAGE_SHARE_KEYS)
        self.relay = {dst: [(src, sent[src][dst]) for src in self.sharing if src != dst] for dst in self.sharing}

    def _drop_silent(self, asked: Iterable[int], answered: Mapping[int, Any], stage: str) -> None:
        listed = {d["node_id"] for d in self.dropped if d["stage"] == stage}
        for n in asked:
            if n not in answered and n not in listed:
                self._drop(n, stage, "no reply in time")

    def train_record(self, node: int) -> ConfigRecord:
        """What goes with the train message to `node`: the shares the other sites made for it."""
        relayed = self.relay[node]
        return ConfigRecord(
            {**self._base(STAGE_MASK), "srcs": [s for s, _ in relayed], "ctxts": [c for _, c in relayed]}
        )

    def field_like(self, global_arrays: Arrays) -> Arrays:
        """The form of a masked vector (no memory: broadcast views), for the payload-size limit."""
        zero = field_dtype(self.cfg.modulus)(0)
        return {k: np.broadcast_to(zero, v.shape) for k, v in global_arrays.items()}

    def validate_masked(
        self, node: int, arrays: Arrays, global_arrays: Arrays, site: Mapping[str, Any], num_examples: int
    ) -> dict[str, Any]:
        """A masked vector's form, and the SecAgg parameters its site declares (signed with it)."""
        if node not in self.relay:
            raise UpdateRejected(f"node {node} did not take part in this round's key sharing")
        missing, extra = sorted(set(global_arrays) - set(arrays)), sorted(set(arrays) - set(global_arrays))
        if missing or extra:
            raise UpdateRejected(f"unexpected adapter keys: missing {missing[:3]}, unexpected {extra[:3]}")
        dtype = np.dtype(field_dtype(self.cfg.modulus))
        for key, w in global_arrays.items():
            a = arrays[key]
            if a.shape != w.shape or a.dtype != dtype:
                raise UpdateRejected(f"masked tensor {key} is {a.dtype}{a.shape}, expected {dtype}{w.shape}")
            if a.size and (int(a.min()) < 0 or int(a.max()) >= self.cfg.modulus):
                raise UpdateRejected(f"masked tensor {key} has values outside [0, modulus)")
        try:
            declared = json.loads(str(site["secagg"]))
        except (KeyError, json.JSONDecodeError):
            raise UpdateRejected("masked update without its `secagg` declaration") from None
        noise = str(declared.get("noise", "local"))
        others = {n for n, mode in self.noise.items() if n != node and mode != noise}
        if noise not in ("local", "distributed") or others:
            raise UpdateRejected(f"noise {noise!r} differs from the other sites' this round: the sum would mix them")
        expected = {
            "clip": float(self.cfg.clip),
            "quantization_range": int(self.cfg.quantization_range),
            "modulus": int(self.cfg.modulus),
            # A distributed round is one step per site, averaged unweighted: its noise is calibrated to that.
            "weight": 1 if noise == "distributed" else int(num_examples),
            "masked_with": [s for s, _ in self.relay[node]],
        }
        differs = {k: declared.get(k) for k, v in expected.items() if declared.get(k) != v}
        if differs:
            raise UpdateRejected(f"secagg declaration differs from this round's: {differs}")
        if noise == "distributed":
            t = declared.get("min_honest")
            if isinstance(t, bool) or not isinstance(t, int) or t < 1:
                raise UpdateRejected(f"a distributed-noise vector must declare its min_honest, got {t!r}")
            self.min_honest = max(self.min_honest, t)
        self.noise[node] = noise
        return declared

    def unmask(
        self, grid: Grid, masked: Mapping[int, Arrays], weights: Mapping[int, int], *, min_sites: int, timeout: float
    ) -> tuple[Arrays, dict[str, Any]]:
        """The weighted mean delta of the survivors' clipped updates (float64), and the round's record.

        `masked` and `weights` are keyed by the node ids of the survivors whose vectors passed the gate."""
        active = sorted(masked)
        dead = [n for n in self.sharing if n not in masked]
        for n in dead:
            if not any(d["node_id"] == n for d in self.dropped):
                self._drop(n, STAGE_MASK, "no usable masked update")
        self._need(len(active), max(min_sites, self.min_honest), STAGE_MASK)
        distributed = any(self.noise.get(n) == "distributed" for n in active)
        total_weight = len(active) if distributed else int(sum(weights[n] for n in active))
        check_capacity(
            total_weight=total_weight, quantization_range=self.cfg.quantization_range, modulus=self.cfg.modulus
        )
        request = ConfigRecord({**self._base(STAGE_UNMASK), "active": active, "dead": dead})
        replies = grid.send_and_receive(_query(active, {n: request for n in active}, self.round), timeout=timeout)
        seed_shares: dict[int, list[bytes]] = {n: [] for n in active}
        key_shares: dict[int, list[bytes]] = {n: [] for n in dead}
        answered = 0
        for msg in replies:
            node = msg.metadata.src_node_id
            try:
                rec = _reply_record(msg)
                for n, share, kind in zip(rec["nodes"], rec["shares"], rec["kinds"], strict=True):
                    target = seed_shares if kind == "seed" else key_shares
                    if int(n) not in target:
                        raise SecAggFailed(f"a {kind} share for node {n}, which was not asked for")
                    target[int(n)].append(bytes(share))
                answered += 1
            except (SecAggFailed, KeyError, TypeError, ValueError) as err:
                self._drop(node, STAGE_UNMASK, str(err))
        if answered < self.threshold:
            raise SecAggFailed(
                f"round {self.round}: {answered} site(s) returned shares, the threshold is {self.threshold}"
            )
        total = self._sum(masked, active, dead, seed_shares, key_shares)
        mean = dequantize_sum(
            total,
            clip=self.cfg.clip,
            quantization_range=self.cfg.quantization_range,
            modulus=self.cfg.modulus,
            total_weight=total_weight,
        )
        record = {
            "enabled": True,
            "clip": float(self.cfg.clip),
            "quantization": {
                "range": int(self.cfg.quantization_range),
                "step": 2.0 * self.cfg.clip / self.cfg.quantization_range,
                "modulus_bits": self.cfg.modulus.bit_length() - 1,
            },
            "threshold": self.threshold,
            "sites": active,
            "dropped": self.dropped,
            "total_weight": total_weight,
            "protocol": "secagg+ (complete graph), honest-but-curious coordinator",
            "noise": "distributed" if distributed else "local",
            **({"min_honest": self.min_honest} if distributed else {}),
        }
        return mean, record

    def _sum(
        self,
        masked: Mapping[int, Arrays],
        active: list[int],
        dead: list[int],
        seed_shares: Mapping[int, list[bytes]],
        key_shares: Mapping[int, list[bytes]],
    ) -> Arrays:
        modulus = self.cfg.modulus
        first = masked[active[0]]
        shapes = shapes_of(first)
        total: Arrays = {k: np.zeros(s, dtype=field_dtype(modulus)) for k, s in shapes.items()}
        for n in active:
            total = add_masks(total, masked[n], sign=+1)
        for n in active:
            seed = recover_secret(seed_shares[n], threshold=self.threshold)
            total = add_masks(total, prg_mask(seed, shapes, modulus), sign=-1)
        for j in dead:
            sk1 = recover_secret(key_shares[j], threshold=self.threshold)
            for i in active:
                mask = prg_mask(pairwise_seed(sk1, self.public_keys[i][0]), shapes, modulus)
                # Site i added this mask when i > j and subtracted it otherwise: take its share back out.
                total = add_masks(total, mask, sign=-1 if i > j else +1)
        return reduce_field(total, modulus)
