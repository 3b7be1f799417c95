"""Clipping a delta: the norm over all tensors together, scaled down only when above the bound."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from common.arrays import clip_delta, l2_norm


def test_clip_delta_scales_over_all_tensors_together():
    big, norm = clip_delta({"a": np.array([3.0, 0.0], dtype=np.float32), "b": np.array([4.0])}, clip=1.0)
    assert norm == pytest.approx(5.0)
    assert l2_norm(big) == pytest.approx(1.0)
    np.testing.assert_allclose(big["a"], [0.6, 0.0])
    np.testing.assert_allclose(big["b"], [0.8])
    assert big["a"].dtype == np.float64


def test_clip_delta_leaves_a_small_delta_unchanged():
    small, norm = clip_delta({"a": np.array([0.3, 0.4])}, clip=1.0)
    assert norm == pytest.approx(0.5)
    np.testing.assert_array_equal(small["a"], [0.3, 0.4])


@settings(max_examples=50, deadline=None)
@given(
    arrays(np.float64, st.integers(1, 20), elements=st.floats(-1e3, 1e3)),
    st.floats(1e-3, 1e3),
)
def test_clip_delta_never_exceeds_the_bound(values, clip):
    clipped, norm = clip_delta({"w": values}, clip)
    assert l2_norm(clipped) <= clip * (1 + 1e-9)
    assert norm == pytest.approx(float(np.linalg.norm(values)), rel=1e-9, abs=1e-12)
