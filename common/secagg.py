"""Secure aggregation arithmetic, shared by the sites (which mask) and the coordinator (which unmasks).

SecAgg (Bonawitz et al. 2017) with every site a neighbour of every other, i.e. SecAgg+ (Bell et al.
2020) on the complete graph, which is what a cross-silo federation of a few to ~100 sites can afford:

    delta_k = clip(w_k - w, clip)                            L2-clipped at the site, before masking
    q_k     = n_k * stochastic_round(delta_k * R / (2 clip))  integers in [-n_k R/2, n_k R/2]
    y_k     = q_k + PRG(b_k) + sum_{j<k} PRG(s_kj) - sum_{j>k} PRG(s_kj)   (mod M)

The pairwise masks cancel in the sum; the self masks PRG(b_k) are removed once Shamir shares of
b_k come back from the surviving sites. For a site that dropped after key sharing, the survivors
return shares of its key-agreement secret instead, so the coordinator can remove the pairwise masks
it left in the others' vectors. The coordinator learns sum_k q_k and nothing about one q_k.

Masks come from AES-256-CTR keyed by the full 32-byte secret (Flower's `pseudo_rand_gen` folds its
seed to 32 bits, which a coordinator could brute-force). Shares travel encrypted with AES-GCM under
an X25519 key between the two sites, bound to the run, round, sender and receiver. Shamir sharing
is Flower's (`flwr.common.secure_aggregation.crypto.shamir`). Pure: no process, no network.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flwr.common.secure_aggregation.crypto.shamir import combine_shares, create_shares

from common.arrays import Arrays, clip_delta
from common.errors import FederationFailed

# Field elements travel in the narrowest unsigned type that holds [0, M): uint32 for M <= 2^32 is 4 bytes a
# value where int64 (Flower's SecAgg+) is 8. Arithmetic wraps mod 2^bits and M divides 2^bits, so reducing
# mod M at the end is exact.
FIELD_DTYPES = (np.uint8, np.uint16, np.uint32, np.uint64)
# Quantised values are formed in int64 before they are reduced: M <= 2^62 keeps them and their centred
# decoding inside int64.
MAX_MODULUS = 1 << 62
SECRET_BYTES = 32  # the self-mask seed, as long as an AES-256 key
NONCE_BYTES = 12  # AES-GCM's standard nonce


class SecAggFailed(FederationFailed):
    """A secure aggregation stage could not complete: the round fails closed, no update is revealed."""


def threshold_for(sites: int, fraction: float) -> int:
    """Shamir threshold t: more than half the sites (with `fraction` > 0.5), and never below 2."""
    return min(sites, max(2, math.ceil(fraction * sites)))


def check_modulus(modulus: int) -> None:
    if modulus < 2 or modulus > MAX_MODULUS or modulus & (modulus - 1):
        raise SecAggFailed(f"secagg modulus must be a power of two in [2, 2^62], got {modulus}")


def field_dtype(modulus: int) -> type[np.unsignedinteger]:
    """The narrowest unsigned integer type holding every value in [0, `modulus`)."""
    check_modulus(modulus)
    bits = modulus.bit_length() - 1
    return next(t for t in FIELD_DTYPES if np.iinfo(t).bits >= bits)


def check_capacity(*, total_weight: int, quantization_range: int, modulus: int) -> None:
    """The weighted sum must stay inside (-M/2, M/2) or it wraps around and decodes wrongly."""
    if total_weight * (quantization_range // 2 + 1) >= modulus // 2:
        raise SecAggFailed(
            f"the sum of {total_weight} weighted examples at quantization range {quantization_range} can "
            f"overflow modulus 2^{modulus.bit_length() - 1}: raise `secagg.modulus` or lower `quantization_range`"
        )


# --- quantisation -------------------------------------------------------------------------------


def quantize_delta(
    delta: Arrays,
    *,
    clip: float,
    quantization_range: int,
    weight: int,
    modulus: int,
    rng: np.random.Generator | None = None,
) -> tuple[Arrays, bool]:
    """The clipped delta as weighted field elements, and whether clipping changed it.

    Each coordinate of a clipped delta lies in [-clip, clip]; it is scaled to [-R/2, R/2] and rounded
    stochastically (unbiased, error < one step of 2 clip / R), multiplied by the site's weight, and
    reduced mod M (two's complement, so negatives decode back)."""
    check_modulus(modulus)
    if weight * (quantization_range // 2 + 1) >= modulus // 2:
        raise SecAggFailed(f"weight {weight} at quantization range {quantization_range} overflows the modulus")
    rng = rng if rng is not None else np.random.default_rng()
    clipped, norm = clip_delta(delta, clip)
    was_clipped = norm > clip
    scale = quantization_range / (2.0 * clip)
    out: Arrays = {}
    for key, d in clipped.items():
        x = np.clip(d, -clip, clip) * scale
        low = np.floor(x)
        q = (low + (rng.random(x.shape) < (x - low))).astype(np.int64)
        out[key] = to_field(q * np.int64(weight), modulus)
    return out, was_clipped


def to_field(values: np.ndarray, modulus: int) -> np.ndarray:
    """Signed int64 values as field elements mod M (two's complement, so negatives decode back)."""
    return (values.astype(np.int64) & np.int64(modulus - 1)).astype(field_dtype(modulus))


def from_field(values: np.ndarray, modulus: int) -> np.ndarray:
    """Field elements centred to (-M/2, M/2] as int64: the inverse of `to_field` for values that fit."""
    signed = values.astype(np.int64)
    return np.where(signed >= modulus // 2, signed - np.int64(modulus), signed)


def dequantize_sum(total: Arrays, *, clip: float, quantization_range: int, modulus: int, total_weight: int) -> Arrays:
    """The weighted mean of the sites' clipped deltas, in float64, from the unmasked sum mod M."""
    scale = quantization_range / (2.0 * clip)
    out: Arrays = {}
    for key, t in total.items():
        # Centre in integers first: float64 holds whole numbers exactly only up to 2^53.
        out[key] = from_field(t, modulus).astype(np.float64) / scale / total_weight
    return out


# --- masks ----------------------------------------------------------------------------------------


def shapes_of(arrays: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in arrays.items()}


def prg_mask(seed: bytes, shapes: Mapping[str, tuple[int, ...]], modulus: int) -> Arrays:
    """Uniform field elements from AES-256-CTR keyed by `seed` (32 bytes), tensors in sorted key order.

    One value per field-type word of the stream, its low log2(M) bits kept: uniform because M is a power
    of two dividing 2^bits."""
    if len(seed) != SECRET_BYTES:
        raise SecAggFailed(f"a mask seed must be {SECRET_BYTES} bytes, got {len(seed)}")
    dtype = field_dtype(modulus)
    total = sum(math.prod(s) for s in shapes.values())
    width = np.dtype(dtype).itemsize
    stream = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor().update(bytes(width * total))
    values = np.frombuffer(stream, dtype=dtype) & dtype(modulus - 1)
    out: Arrays = {}
    offset = 0
    for key in sorted(shapes):
        n = math.prod(shapes[key])
        out[key] = values[offset : offset + n].reshape(shapes[key])
        offset += n
    return out


def add_masks(acc: Arrays, mask: Arrays, *, sign: int) -> Arrays:
    """acc + sign * mask, elementwise, wrapping mod 2^bits of the field type (reduce mod M with `reduce_field`)."""
    with np.errstate(over="ignore"):
        return {k: acc[k] + mask[k] if sign > 0 else acc[k] - mask[k] for k in acc}


def reduce_field(arrays: Arrays, modulus: int) -> Arrays:
    dtype = field_dtype(modulus)
    return {k: v.astype(dtype, copy=False) & dtype(modulus - 1) for k, v in arrays.items()}


# --- keys and shares ------------------------------------------------------------------------------


def generate_key() -> tuple[bytes, bytes]:
    """A fresh X25519 key pair as raw (private, public) bytes."""
    key = X25519PrivateKey.generate()
    return key.private_bytes_raw(), key.public_key().public_bytes_raw()


def agree(private: bytes, public: bytes, *, label: bytes) -> bytes:
    """A 32-byte secret both ends derive from their X25519 key and the other's public key."""
    try:
        shared = X25519PrivateKey.from_private_bytes(private).exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError as err:
        raise SecAggFailed(f"bad secagg public key: {err}") from None
    return HKDF(algorithm=hashes.SHA256(), length=SECRET_BYTES, salt=None, info=b"silo-secagg " + label).derive(shared)


def pairwise_seed(private: bytes, public: bytes) -> bytes:
    return agree(private, public, label=b"pairwise-mask")


def share_secret(secret: bytes, *, threshold: int, shares: int) -> list[bytes]:
    return create_shares(secret, threshold, shares)


def recover_secret(shares: list[bytes], *, threshold: int) -> bytes:
    if len(shares) < threshold:
        raise SecAggFailed(f"{len(shares)} share(s) cannot rebuild a secret shared with threshold {threshold}")
    try:
        return combine_shares(shares[:threshold])
    except ValueError as err:
        raise SecAggFailed(f"secret shares do not combine: {err}") from None


def _share_aad(run_id: str, rnd: int, src: int, dst: int) -> bytes:
    return f"silo-secagg|{run_id}|{rnd}|{src}|{dst}".encode()


def seal_shares(key: bytes, *, run_id: str, rnd: int, src: int, dst: int, seed_share: bytes, key_share: bytes) -> bytes:
    """One site's two shares for another, encrypted for it alone and bound to run, round, src and dst."""
    nonce = os.urandom(NONCE_BYTES)
    plain = len(seed_share).to_bytes(4, "little") + seed_share + key_share
    return nonce + AESGCM(key).encrypt(nonce, plain, _share_aad(run_id, rnd, src, dst))


def open_shares(key: bytes, ciphertext: bytes, *, run_id: str, rnd: int, src: int, dst: int) -> tuple[bytes, bytes]:
    try:
        plain = AESGCM(key).decrypt(
            ciphertext[:NONCE_BYTES], ciphertext[NONCE_BYTES:], _share_aad(run_id, rnd, src, dst)
        )
    except (InvalidTag, ValueError):
        raise SecAggFailed(f"shares from node {src} do not decrypt for node {dst} in this run and round") from None
    n = int.from_bytes(plain[:4], "little")
    return plain[4 : 4 + n], plain[4 + n :]


# --- wire format ----------------------------------------------------------------------------------

# Record name of the SecAgg fields in a message's content, and the Flower action of the key stages
# (message type "query.secagg"); the masked update itself travels in the ordinary train reply.
RECORD = "secagg"
ACTION = "secagg"
STAGE_SETUP = "setup"  # coordinator -> site: parameters; site -> coordinator: two public keys
STAGE_SHARE_KEYS = "share-keys"  # everyone's public keys; site -> coordinator: encrypted shares
STAGE_MASK = "mask"  # with the train message: the shares addressed to this site
STAGE_UNMASK = "unmask"  # survivors and dropped sites; site -> coordinator: the shares it may reveal
