"""Skeleton operations for pen renders: Zhang–Suen thinning, pruning of short side branches, a round
pen, and the opening of a type 4 (binary numpy images; True is ink)."""

from __future__ import annotations

import numpy as np


def _neighbours(b: np.ndarray) -> list[np.ndarray]:
    """The 8 neighbours of every pixel (zero outside), clockwise from the one above: P2..P9."""
    p = np.pad(b, 1)
    return [p[:-2, 1:-1], p[:-2, 2:], p[1:-1, 2:], p[2:, 2:], p[2:, 1:-1], p[2:, :-2], p[1:-1, :-2],
            p[:-2, :-2]]


def _count(b: np.ndarray) -> np.ndarray:
    return sum(x.astype(np.int8) for x in _neighbours(b))


def thin(ink: np.ndarray) -> np.ndarray:
    """Zhang & Suen's (1984) thinning of a binary image to a one-pixel-wide, 8-connected skeleton."""
    b = ink.astype(bool)
    changed = True
    while changed:
        changed = False
        for first in (True, False):
            p2, p3, p4, p5, p6, p7, p8, p9 = n = _neighbours(b)
            count = sum(x.astype(np.int8) for x in n)
            turns = sum((~n[i] & n[(i + 1) % 8]).astype(np.int8) for i in range(8))
            drop = b & (count >= 2) & (count <= 6) & (turns == 1)
            if first:
                drop &= ~(p2 & p4 & p6) & ~(p4 & p6 & p8)
            else:
                drop &= ~(p2 & p4 & p8) & ~(p2 & p6 & p8)
            if drop.any():
                b &= ~drop
                changed = True
    return b


def prune(skeleton: np.ndarray, length: int) -> np.ndarray:
    """Remove side branches up to `length` pixels long (serifs, the foot of a 1) and keep the
    ends of the main strokes: peel end points `length` times, then grow the remaining ends back
    along the original skeleton (Gonzalez & Woods' pruning)."""
    if length <= 0:
        return skeleton
    core = skeleton.copy()
    for _ in range(length):
        core &= _count(core) > 1
    grow = core & (_count(core) == 1)
    for _ in range(length):
        grown = grow.copy()
        for x in _neighbours(grow):
            grown |= x
        grow = grown & skeleton
    return core | grow


def disk_dilate(b: np.ndarray, radius: int) -> np.ndarray:
    """Draw every pixel of `b` as a disk of `radius` (a round pen), growing the canvas to fit."""
    h, w = b.shape
    out = np.zeros((h + 2 * radius, w + 2 * radius), bool)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy * dy + dx * dx <= radius * (radius + 1):
                out[radius + dy:radius + dy + h, radius + dx:radius + dx + w] |= b
    return out


def line_pixels(b: np.ndarray, y0: float, x0: float, y1: float, x1: float) -> None:
    """Set the pixels of the segment (y0, x0)-(y1, x1) in `b`, 8-connected."""
    n = int(max(abs(y1 - y0), abs(x1 - x0))) + 1
    ys = np.clip(np.round(np.linspace(y0, y1, n)).astype(int), 0, b.shape[0] - 1)
    xs = np.clip(np.round(np.linspace(x0, x1, n)).astype(int), 0, b.shape[1] - 1)
    b[ys, xs] = True


def open_four(skeleton: np.ndarray) -> np.ndarray:
    """A type 4 (closed: a diagonal joins the stem's top to the bar) redrawn as most hands write it,
    open: the diagonal is replaced by an upright stroke that meets the bar at its left end and
    leaves the stem's top free.

    The stem is the longest upright line (over slants of -0.4..0.4), the bar the longest row of the
    lower part; the diagonal is what lies above the bar and left of the stem. A skeleton in which
    these are not found is returned unchanged."""
    ys, xs = np.nonzero(skeleton)
    if len(ys) < 10:
        return skeleton
    top, bottom = ys.min(), ys.max()
    h = bottom - top + 1
    best = (-1, 0.0, 0)
    for k in np.linspace(-0.4, 0.4, 17):                  # x + k * (y - bottom): slant undone
        cols = np.round(xs + k * (ys - bottom)).astype(int)
        counts = np.bincount(cols - cols.min())
        c = int(np.argmax(counts))
        if counts[c] > best[0]:
            best = (int(counts[c]), float(k), c + int(cols.min()))
    count, k, stem = best
    cols = np.round(xs + k * (ys - bottom)).astype(int)
    lower = ys > top + h // 3
    rows = np.bincount(ys[lower & (cols < stem - 2)], minlength=skeleton.shape[0])
    if count < h // 2 or rows.max() < 3:
        return skeleton
    bar = int(np.argmax(rows))
    diagonal = (ys < bar - 1) & (cols < stem - 2)
    on_bar = (np.abs(ys - bar) <= 1) & (cols < stem)
    if diagonal.sum() < h // 4 or not on_bar.any():
        return skeleton
    left = int(cols[on_bar].min())
    out = skeleton.copy()
    out[ys[diagonal], xs[diagonal]] = False
    y_top = top + 0.1 * h
    line_pixels(out, bar, left - k * (bar - bottom), y_top,
                left + 0.15 * (stem - left) - k * (y_top - bottom))
    return out
