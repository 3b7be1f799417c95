"""Named arrays (an adapter, or the difference of two) and their L2 geometry, for both sides."""

from __future__ import annotations

import math

import numpy as np

Arrays = dict[str, np.ndarray]
"""Tensor name -> array: an adapter's weights as Flower carries them, or a delta between two adapters."""


def l2_norm(arrays: Arrays) -> float:
    """||arrays||_2 over all tensors together, in float64."""
    # Elementwise square-sum, not np.dot: OpenBLAS threads a dot product of this size, and its pool
    # fights torch's in the coordinator process (7.7 ms vs 0.13 ms a call, bench/security_overhead.py).
    return math.sqrt(sum(float(np.square(a.astype(np.float64)).sum()) for a in arrays.values()))


def clip_delta(delta: Arrays, clip: float) -> tuple[Arrays, float]:
    """`delta` in float64, scaled to L2 norm <= `clip` over all tensors together, and its norm before."""
    norm = l2_norm(delta)
    scale = clip / norm if norm > clip else 1.0
    return {k: d.astype(np.float64) * scale for k, d in delta.items()}, norm
