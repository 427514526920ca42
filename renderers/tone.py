"""The `tone` baseline: what a lookup table does without learning. A monotone 256-entry tone curve
maps the renders' grey levels onto the real images' by quantile matching (histogram
specification): level v goes to the real quantile at the renders' mid-rank of v,
    curve(v) = min{u : C_real(u) >= (C_syn(v - 1) + C_syn(v)) / 2},
with C the cumulative share of pixels at or below a level. It is monotone, and fitted on the real
images themselves it maps every level they use onto itself."""

from __future__ import annotations

import numpy as np


def cumulative(images: np.ndarray) -> np.ndarray:
    """C(v) for v = 0..255: the share of pixels at or below v."""
    counts = np.bincount(np.asarray(images, np.uint8).ravel(), minlength=256).astype(np.float64)
    if counts.sum() == 0:
        raise ValueError("the tone curve needs at least one image")
    return np.cumsum(counts) / counts.sum()


def fit_tone_curve(synthetic: np.ndarray, real: np.ndarray) -> np.ndarray:
    """The uint8 lookup table [256] that gives uint8 `synthetic` images the grey-level
    distribution of uint8 `real` images."""
    c_syn, c_real = cumulative(synthetic), cumulative(real)
    mid = (np.r_[0.0, c_syn[:-1]] + c_syn) / 2
    # the smallest real level whose cumulative share reaches the mid-rank (a tiny slack absorbs
    # the rounding of the cumulative sums)
    curve = np.searchsorted(c_real, mid - 1e-12, side="left")
    return np.minimum(curve, 255).astype(np.uint8)


def apply_tone_curve(images: np.ndarray, curve: np.ndarray) -> np.ndarray:
    return np.asarray(curve, np.uint8)[np.asarray(images, np.uint8)]
