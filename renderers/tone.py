"""The `tone` baseline: what a lookup table does without learning. A monotone 256-entry tone curve
maps the renders' grey levels onto the real images' by quantile matching (histogram
specification): level v goes to the real quantile at the renders' mid-rank of v,
    curve(v) = min{u : C_real(u) >= (C_syn(v - 1) + C_syn(v)) / 2},
with C the cumulative share of pixels at or below a level. It is monotone, and fitted on the real
images themselves it maps every level they use onto itself.

One curve for all images cannot give each image the grey levels of a real digit: MNIST puts an
image's brightest pixels on a plateau at one level of 252-254, a level of its own per image.
`match_levels` is the same quantile matching done per image, against one real exemplar each: an
image's inked pixels (above black), in order of level, take the exemplar's inked levels at the same
quantiles. It keeps the image's ink and the order of its levels, so its shape, and it leaves
black alone. The exemplar is a real image of the same digit with about as many inked pixels
(`exemplars_for`): a thin stroke's levels do not fit a wide one."""

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


def match_levels(images, exemplars, black: float = 0.0):
    """Per-image quantile matching: images and exemplars are float tensors [N, ...] (image i is
    matched to exemplar i). Image i's pixels above `black`, sorted by level (ties in raster order),
    take the levels of exemplar i's pixels above `black` at the same quantiles,
        rank r of m inked pixels -> the exemplar's inked level of rank floor((r + 1/2) k / m), of k;
    the other pixels, and images whose exemplar has no ink, stay as they are. An image matched to
    itself is unchanged."""
    import torch

    n = images.shape[0]
    flat, ex = images.reshape(n, -1), exemplars.reshape(n, -1).to(images.dtype)
    size = flat.shape[1]
    m = (flat > black).sum(1, keepdim=True)
    k = (ex > black).sum(1, keepdim=True)
    order = flat.argsort(dim=1, stable=True)  # ascending: the m inked pixels come last
    rank = torch.arange(size, device=flat.device).expand(n, size) - (size - m)
    q = ((rank.clamp(min=0) + 0.5) * k / m.clamp(min=1)).floor().long()
    levels = ex.sort(1).values.gather(1, (size - k + q).clamp(max=size - 1))
    new = torch.where((rank >= 0) & (k > 0), levels, flat.gather(1, order))
    return torch.empty_like(flat).scatter_(1, order, new).reshape(images.shape)


FEWEST_EXEMPLARS = 10  # exemplars of like ink are drawn from at least this many of a digit's images


def exemplars_for(labels, real_labels, seed: int, ink=None, real_ink=None, nearest: float = 1.0):
    """For each label, the index of a real image of that label drawn at random (any real image
    where the label has none). With `ink` and `real_ink` (inked pixels per image) and `nearest`
    < 1, the draw is from the `nearest` share of that label's real images nearest in ink, but from
    at least FEWEST_EXEMPLARS of them (all, where it has fewer): the window of that many in ink
    order centred where the image's own ink falls. (With one or two exemplars a digit, thousands
    of renders would share their levels exactly, a tell of its own.)"""
    rng = np.random.default_rng(seed)
    labels, real_labels = np.asarray(labels), np.asarray(real_labels)
    if ink is not None:
        ink, real_ink = np.asarray(ink), np.asarray(real_ink)
    picks = rng.integers(len(real_labels), size=len(labels))  # the fallback
    for c in np.unique(labels):
        mine, theirs = np.flatnonzero(labels == c), np.flatnonzero(real_labels == c)
        n = len(theirs)
        w = n if ink is None else min(n, max(FEWEST_EXEMPLARS, round(nearest * n)))
        if w == n:  # any of them (none: the fallback)
            if n:
                picks[mine] = theirs[rng.integers(n, size=len(mine))]
            continue
        theirs = theirs[np.argsort(real_ink[theirs], kind="stable")]
        at = np.searchsorted(real_ink[theirs], ink[mine])
        start = np.clip(at - w // 2, 0, n - w)
        picks[mine] = theirs[start + rng.integers(w, size=len(mine))]
    return picks


def inked(images: np.ndarray) -> np.ndarray:
    """Pixels above black, per image."""
    return (np.asarray(images).reshape(len(images), -1) > 0).sum(1)


def match_to_real(images: np.ndarray, labels, real: np.ndarray, real_labels, seed: int,
                  nearest: float = 1.0, chunk: int = 10000) -> np.ndarray:
    """uint8 images, each with its levels matched to a real image of its label (match_levels), drawn
    from the `nearest` share of them nearest in ink (exemplars_for); `chunk` images at a time to
    bound the memory of the sort."""
    import torch

    pick = exemplars_for(labels, real_labels, seed, inked(images), inked(real), nearest)
    out = np.empty_like(images)
    for i in range(0, len(images), chunk):
        done = match_levels(torch.as_tensor(images[i:i + chunk]).float(),
                            torch.as_tensor(real[pick[i:i + chunk]]).float())
        out[i:i + chunk] = done.round().clamp(0, 255).to(torch.uint8).numpy()
    return out
