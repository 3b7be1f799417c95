"""Secure aggregation arithmetic: quantisation error bounds, masks that cancel, shares that rebuild."""

from __future__ import annotations

import numpy as np
import pytest

from common.secagg import (
    SecAggFailed,
    add_masks,
    check_capacity,
    dequantize_sum,
    field_dtype,
    generate_key,
    open_shares,
    pairwise_seed,
    prg_mask,
    quantize_delta,
    recover_secret,
    reduce_field,
    seal_shares,
    share_secret,
    threshold_for,
)

M = 1 << 62
SHAPES = {"a": (4, 3), "b": (7,)}


def _delta(seed: int, norm: float) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    d = {k: rng.normal(size=s) for k, s in SHAPES.items()}
    n = np.sqrt(sum(float((v**2).sum()) for v in d.values()))
    return {k: v * norm / n for k, v in d.items()}


def test_quantize_then_dequantize_is_within_one_step() -> None:
    clip, r = 1.0, 1 << 16
    delta = _delta(0, 0.9)
    q, clipped = quantize_delta(delta, clip=clip, quantization_range=r, weight=3, modulus=M)
    back = dequantize_sum(q, clip=clip, quantization_range=r, modulus=M, total_weight=3)
    assert not clipped
    for k in delta:
        assert np.abs(back[k] - delta[k]).max() <= 2 * clip / r


def test_quantize_clips_to_the_l2_bound_and_says_so() -> None:
    q, clipped = quantize_delta(_delta(1, 5.0), clip=0.5, quantization_range=1 << 20, weight=1, modulus=M)
    back = dequantize_sum(q, clip=0.5, quantization_range=1 << 20, modulus=M, total_weight=1)
    assert clipped
    assert np.sqrt(sum(float((v**2).sum()) for v in back.values())) == pytest.approx(0.5, abs=1e-4)


@pytest.mark.parametrize(("modulus", "r"), [(M, 1 << 22), (1 << 32, 1 << 16), (1 << 16, 1 << 8)])
def test_masked_sum_equals_the_weighted_mean_of_the_clipped_deltas(modulus: int, r: int) -> None:
    clip = 1.0
    deltas, weights = [_delta(i, 0.3 + 0.2 * i) for i in range(3)], [10, 20, 7]
    seeds = [bytes([i]) * 32 for i in range(3)]
    keys = [generate_key() for _ in range(3)]
    dtype = field_dtype(modulus)
    total = {k: np.zeros(s, dtype) for k, s in SHAPES.items()}
    for i in range(3):
        y, _ = quantize_delta(deltas[i], clip=clip, quantization_range=r, weight=weights[i], modulus=modulus)
        for j in range(3):
            if j != i:
                mask = prg_mask(pairwise_seed(keys[i][0], keys[j][1]), SHAPES, modulus)
                y = add_masks(y, mask, sign=+1 if i > j else -1)
        y = reduce_field(add_masks(y, prg_mask(seeds[i], SHAPES, modulus), sign=+1), modulus)
        assert all(v.dtype == dtype for v in y.values())
        assert not np.array_equal(y["a"], np.zeros_like(y["a"]))
        total = add_masks(total, y, sign=+1)
    for s in seeds:
        total = add_masks(total, prg_mask(s, SHAPES, modulus), sign=-1)
    mean = dequantize_sum(
        reduce_field(total, modulus), clip=clip, quantization_range=r, modulus=modulus, total_weight=37
    )
    expected = {k: sum(w * d[k] for w, d in zip(weights, deltas, strict=True)) / 37 for k in SHAPES}
    assert max(np.abs(mean[k] - expected[k]).max() for k in SHAPES) <= 2 * clip / r


def test_field_type_is_the_narrowest_unsigned_integer_the_modulus_allows() -> None:
    assert [field_dtype(1 << b) for b in (1, 8, 9, 16, 17, 32, 33, 62)] == [
        *(np.uint8,) * 2,
        *(np.uint16,) * 2,
        *(np.uint32,) * 2,
        *(np.uint64,) * 2,
    ]
    # Bytes on the wire for a 50,176-value adapter (the demo's): 4 a value at M = 2^32, half of int64's 8.
    y, _ = quantize_delta({"x": np.zeros(50_176)}, clip=1.0, quantization_range=1 << 16, weight=1, modulus=1 << 32)
    assert y["x"].nbytes == 200_704 == 50_176 * np.dtype(np.int64).itemsize // 2


def test_mask_is_uniform_over_a_narrow_field() -> None:
    # 2^16 values over 2^8 bins: each bin's count is Binomial(65536, 1/256), mean 256, sd 16; 10 sd either
    # side fails with probability < 256 * 2e-23.
    values = prg_mask(bytes(range(32)), {"x": (1 << 16,)}, 1 << 8)["x"]
    counts = np.bincount(values, minlength=256)
    assert values.dtype == np.uint8 and counts.min() > 256 - 160 and counts.max() < 256 + 160


def test_pairwise_seeds_agree_from_either_end_and_differ_between_pairs() -> None:
    a, b, c = generate_key(), generate_key(), generate_key()
    assert pairwise_seed(a[0], b[1]) == pairwise_seed(b[0], a[1])
    assert pairwise_seed(a[0], b[1]) != pairwise_seed(a[0], c[1])


def test_mask_uses_the_whole_seed() -> None:
    # Flower's pseudo_rand_gen folds the seed to 32 bits; seeds equal in their XOR-fold must still differ here.
    s1, s2 = bytes(32), b"\x01\x00\x00\x00" * 2 + bytes(24)
    assert not np.array_equal(prg_mask(s1, SHAPES, M)["a"], prg_mask(s2, SHAPES, M)["a"])
    values = prg_mask(s1, {"x": (10_000,)}, M)["x"]
    assert values.min() >= 0 and values.max() < M and len(np.unique(values)) == 10_000


def test_shamir_shares_rebuild_with_threshold_and_not_below() -> None:
    secret = bytes(range(32))
    shares = share_secret(secret, threshold=3, shares=5)
    assert recover_secret([shares[4], shares[1], shares[2]], threshold=3) == secret
    with pytest.raises(SecAggFailed):
        recover_secret(shares[:2], threshold=3)


def test_shares_open_only_for_their_run_round_and_pair() -> None:
    key = pairwise_seed(generate_key()[0], generate_key()[1])
    ct = seal_shares(key, run_id="r", rnd=1, src=2, dst=3, seed_share=b"s" * 20, key_share=b"k" * 20)
    assert open_shares(key, ct, run_id="r", rnd=1, src=2, dst=3) == (b"s" * 20, b"k" * 20)
    for change in ({"rnd": 2}, {"src": 4}, {"dst": 2}, {"run_id": "other"}):
        args = {"run_id": "r", "rnd": 1, "src": 2, "dst": 3, **change}
        with pytest.raises(SecAggFailed):
            open_shares(key, ct, **args)


def test_threshold_is_a_majority_and_at_least_two() -> None:
    assert [threshold_for(n, 0.6) for n in (2, 3, 4, 5, 10)] == [2, 2, 3, 3, 6]
    assert all(threshold_for(n, 0.51) > n / 2 for n in range(2, 50))


def test_capacity_check_refuses_a_sum_that_could_wrap() -> None:
    check_capacity(total_weight=1000, quantization_range=1 << 22, modulus=M)
    with pytest.raises(SecAggFailed, match="overflow"):
        check_capacity(total_weight=1 << 20, quantization_range=1 << 22, modulus=1 << 40)
