"""The adapter on the wire (common/transport.py): compact, exact where promised, strict about form."""

import numpy as np
import pytest
import torch

from common.config import WireEncoding
from common.errors import UpdateRejected
from common.transport import (
    SCALE_PREFIX,
    decode_update,
    encode_global,
    encode_update,
    received_global,
    wire_bytes,
)


def _adapter(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "layer.lora_A.weight": torch.randn(8, 64, generator=g) * 0.1,
        "layer.lora_B.weight": torch.randn(64, 8, generator=g) * 0.01,
        "score.weight": torch.randn(4, 64, generator=g),
    }


def _np(state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in state.items()}


def _round_trip(encoding: WireEncoding) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], int]:
    """(the site's delta from what it received, what the coordinator reconstructs, bytes sent up)."""
    global_np = _np(_adapter(0))
    received = received_global({k: torch.from_numpy(v) for k, v in encode_global(global_np, encoding).items()})
    trained = {k: v + 0.003 * torch.randn_like(v) for k, v in received.items()}
    wire = encode_update(trained, received, encoding)
    deltas = {k: (trained[k] - received[k]).numpy() for k in trained}
    return deltas, decode_update(_np(wire), global_np, encoding), wire_bytes(wire)


def test_fp32_round_trip_applies_the_sites_delta_to_the_coordinators_global():
    deltas, got, _ = _round_trip(WireEncoding.FP32)
    global_np = _np(_adapter(0))
    for k in deltas:
        np.testing.assert_allclose(got[k], global_np[k] + deltas[k], rtol=0, atol=1e-6)


@pytest.mark.parametrize(("encoding", "max_ratio"), [(WireEncoding.FP16, 0.5), (WireEncoding.INT8, 0.26)])
def test_compact_encodings_cut_bytes_and_stay_within_their_rounding(encoding, max_ratio):
    deltas, got, sent = _round_trip(encoding)
    fp32 = sum(v.nbytes for v in deltas.values())
    assert sent <= max_ratio * fp32
    global_np = _np(_adapter(0))
    for k in deltas:
        delta = deltas[k]
        # The coordinator applies the site's delta (from the fp16 global it received) to its exact fp32
        # global: the only error is the delta's own rounding, so none accumulates across rounds.
        if encoding is WireEncoding.FP16:
            bound = np.abs(delta).max() * 2**-10 + 1e-7
        else:
            bound = np.abs(delta).max() / 127 / 2 * 1.0001 + 1e-7
        err = np.abs((got[k] - global_np[k]) - delta).max()
        assert err <= bound, (k, err, bound)


def test_a_delta_that_overflows_fp16_is_refused_at_the_site():
    received = received_global(_adapter(0))
    trained = {k: v.clone() for k, v in received.items()}
    trained["score.weight"][0, 0] = 1e6
    with pytest.raises(UpdateRejected, match="does not fit fp16"):
        encode_update(trained, received, WireEncoding.FP16)


def _int8_wire() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    global_np = _np(_adapter(0))
    received = received_global({k: torch.from_numpy(v) for k, v in global_np.items()})
    trained = {k: v + 0.01 for k, v in received.items()}
    return _np(encode_update(trained, received, WireEncoding.INT8)), global_np


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda w: w.pop(SCALE_PREFIX + "score.weight"), "one scale per tensor"),
        (lambda w: w.__setitem__(SCALE_PREFIX + "score.weight", np.array([np.nan], np.float32)), "finite fp32"),
        (lambda w: w.__setitem__(SCALE_PREFIX + "score.weight", np.array([-1.0], np.float32)), "finite fp32"),
        (lambda w: w.__setitem__(SCALE_PREFIX + "score.weight", np.ones(2, np.float32)), "finite fp32"),
        (lambda w: w.__setitem__("score.weight", np.full((4, 64), -128, np.int8)), "-128"),
        (lambda w: w.__setitem__("score.weight", w["score.weight"].astype(np.int16)), "dtype"),
        (lambda w: w.__setitem__("score.weight", w["score.weight"][:2]), "shape"),
        (lambda w: w.__setitem__("extra.weight", np.zeros(1, np.int8)), "keys differ"),
        (lambda w: w.clear(), "no tensor"),
    ],
)
def test_a_malformed_int8_update_is_rejected_with_its_reason(tamper, reason):
    wire, global_np = _int8_wire()
    tamper(wire)
    with pytest.raises(UpdateRejected, match=reason):
        decode_update(wire, global_np, WireEncoding.INT8)


def test_an_update_in_another_encoding_than_asked_is_rejected():
    wire, global_np = _int8_wire()
    with pytest.raises(UpdateRejected, match="carry no scales"):
        decode_update(wire, global_np, WireEncoding.FP16)
    fp32 = {k: v.astype(np.float32) for k, v in wire.items() if not k.startswith(SCALE_PREFIX)}
    with pytest.raises(UpdateRejected, match="expected float16"):
        decode_update(fp32, global_np, WireEncoding.FP16)


def test_the_global_adapter_goes_down_in_fp16_unless_fp32():
    global_np = _np(_adapter(0))
    assert {v.dtype for v in encode_global(global_np, WireEncoding.INT8).values()} == {np.dtype(np.float16)}
    assert {v.dtype for v in encode_global(global_np, WireEncoding.FP32).values()} == {np.dtype(np.float32)}
    with pytest.raises(UpdateRejected, match="overflows"):
        encode_global({"w": np.array([1e6], np.float32)}, WireEncoding.FP16)


def test_an_untrained_tensor_is_left_out_and_read_back_as_a_zero_delta():
    """FFA-LoRA freezes A: its delta is exactly zero and does not travel, halving a LoRA upload."""
    global_np = _np(_adapter(0))
    received = received_global({k: torch.from_numpy(v) for k, v in encode_global(global_np, WireEncoding.FP16).items()})
    trained = {k: (v + 0.01 if "lora_A" not in k else v.clone()) for k, v in received.items()}
    wire = encode_update(trained, received, WireEncoding.FP16)
    assert "layer.lora_A.weight" not in wire and set(wire) == {"layer.lora_B.weight", "score.weight"}
    got = decode_update(_np(wire), global_np, WireEncoding.FP16)
    np.testing.assert_array_equal(got["layer.lora_A.weight"], global_np["layer.lora_A.weight"])
    np.testing.assert_allclose(got["score.weight"], global_np["score.weight"] + 0.01, rtol=0, atol=1e-5)
