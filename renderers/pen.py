"""Skeleton operations for pen renders: Zhang–Suen thinning, pruning of short side branches, a round
pen, and the hand forms of a type 1, 2, 4, 6, 7, 8 and 9 (binary numpy images; True is ink)."""

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
    n = int(2 * max(abs(y1 - y0), abs(x1 - x0))) + 2  # steps of at most half a pixel: no gaps
    ys = np.clip(np.round(np.linspace(y0, y1, n)).astype(int), 0, b.shape[0] - 1)
    xs = np.clip(np.round(np.linspace(x0, x1, n)).astype(int), 0, b.shape[1] - 1)
    b[ys, xs] = True


def _stem(ys: np.ndarray, xs: np.ndarray) -> tuple[int, float, int]:
    """The longest upright line of a skeleton's pixels (ys, xs), over slants -0.4..0.4: its pixel
    count, its slant k and its column in the unslanted frame x + k * (y - bottom)."""
    bottom = ys.max()
    best = (-1, 0.0, 0)
    for k in np.linspace(-0.4, 0.4, 17):
        cols = np.round(xs + k * (ys - bottom)).astype(int)
        counts = np.bincount(cols - cols.min())
        c = int(np.argmax(counts))
        if counts[c] > best[0]:
            best = (int(counts[c]), float(k), c + int(cols.min()))
    return best


def bare_one(skeleton: np.ndarray) -> np.ndarray:
    """A type 1 (a stem with a flag and often a foot) redrawn as most hands write it: the stem
    alone, one straight stroke. The foot of a serif 1 makes it read as a 2, the flag as a 7.
    A skeleton without an upright line half its height is returned unchanged."""
    ys, xs = np.nonzero(skeleton)
    if len(ys) < 10:
        return skeleton
    count, k, stem = _stem(ys, xs)
    bottom = ys.max()
    if count < (bottom - ys.min() + 1) // 2:
        return skeleton
    on_stem = np.abs(np.round(xs + k * (ys - bottom)) - stem) <= 1
    y0, y1 = int(ys[on_stem].min()), int(ys[on_stem].max())
    out = np.zeros_like(skeleton)
    line_pixels(out, y0, stem - k * (y0 - bottom), y1, stem - k * (y1 - bottom))
    return out


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
    count, k, stem = _stem(ys, xs)
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


def holes(b: np.ndarray) -> np.ndarray:
    """The background pixels that no 4-connected path joins to the border: the inside of loops."""
    outside = np.zeros_like(b)
    outside[[0, -1]] = ~b[[0, -1]]
    outside[:, [0, -1]] |= ~b[:, [0, -1]]
    return ~b & ~grown_within(outside, ~b)


def grown_within(start: np.ndarray, within: np.ndarray) -> np.ndarray:
    """`start` grown 4-connected through the pixels of `within` as far as they reach."""
    region = start & within
    while True:
        grown = region.copy()
        grown[1:] |= region[:-1]
        grown[:-1] |= region[1:]
        grown[:, 1:] |= region[:, :-1]
        grown[:, :-1] |= region[:, 1:]
        grown &= within
        if (grown == region).all():
            return region
        region = grown


def small_loop_six(skeleton: np.ndarray, loop: float = 0.4) -> np.ndarray:
    """A type 6 (a bowl of two thirds of its height under a short hook) redrawn as most hands write
    it: the loop squeezed into the lower `loop` of the height and the stroke above it stretched, so
    the 6 is not read as a 0 or an 8. A skeleton without a loop, or with a small one, is returned
    unchanged."""
    inside = holes(skeleton)
    ys = np.nonzero(skeleton)[0]
    if not inside.any() or len(ys) < 10:
        return skeleton
    top, bottom = int(ys.min()), int(ys.max())
    loop_top = int(np.nonzero(inside)[0].min()) - 1
    new_top = bottom - loop * (bottom - top)
    if loop_top - top < 2 or loop_top >= new_top:
        return skeleton

    def row(y):  # piecewise linear: the stroke [top, loop_top] stretched onto [top, new_top],
        return np.where(y <= loop_top,  # the loop [loop_top, bottom] squeezed onto [new_top, bottom]
                        top + (y - top) * (new_top - top) / (loop_top - top),
                        new_top + (y - loop_top) * (bottom - new_top) / (bottom - loop_top))

    out = np.zeros_like(skeleton)
    h, w = skeleton.shape
    for dy, dx in ((0, 1), (1, -1), (1, 0), (1, 1)):  # every pair of touching pixels, as a segment
        a = skeleton[:h - dy, max(0, -dx):w - max(0, dx)] & skeleton[dy:, max(0, dx):w + min(0, dx)]
        for y, x in zip(*np.nonzero(a)):
            x0 = x + max(0, -dx)
            line_pixels(out, row(y), x0, row(y + dy), x0 + dx)
    return thin(out)


def small_loop_nine(skeleton: np.ndarray) -> np.ndarray:
    """A type 9, a 6 turned half round: its loop squeezed into the upper part (`small_loop_six`),
    then its tail, which type curls to the left, drawn as most hands draw it: straight down from
    the loop's right side (`straight_tail`)."""
    return straight_tail(np.rot90(small_loop_six(np.rot90(skeleton, 2)), 2).copy())


def straight_tail(skeleton: np.ndarray) -> np.ndarray:
    """A 9's stroke below its loop replaced by a straight one from the loop's rightmost pixel at
    its lowest row down to the skeleton's bottom row, upright. A skeleton without a loop, or
    whose loop reaches the bottom, is returned unchanged."""
    inside = holes(skeleton)
    ys, xs = np.nonzero(skeleton)
    if not inside.any() or len(ys) < 10:
        return skeleton
    bottom = int(ys.max())
    loop_bottom = int(np.nonzero(inside)[0].max()) + 1  # the loop's own lowest row
    if bottom - loop_bottom < 3:
        return skeleton
    near = np.abs(ys - loop_bottom) <= 1
    x = int(xs[near].max())
    out = skeleton.copy()
    out[loop_bottom + 1:] = False
    line_pixels(out, loop_bottom, x, bottom, x)
    return out


def looped_two(skeleton: np.ndarray, size: float = 0.14) -> np.ndarray:
    """A type 2 (its diagonal meets the base at a sharp corner) redrawn as many hands write it: a
    loop at the corner, of radius `size` times the height, hanging up and left of it, where the
    stroke turns from the diagonal into the base. The corner is the leftmost pixel of the lowest
    sixth. The canvas grows to hold the loop. A skeleton of under 10 pixels is returned unchanged."""
    ys, xs = np.nonzero(skeleton)
    if len(ys) < 10:
        return skeleton
    top, bottom = ys.min(), ys.max()
    r = size * (bottom - top + 1)
    pad = int(np.ceil(2 * r)) + 2
    out = np.pad(skeleton, pad)
    low = ys >= bottom - (bottom - top + 1) / 6
    corner = int(np.argmin(np.where(low, xs, np.iinfo(xs.dtype).max)))
    yc, xc = ys[corner] + pad, xs[corner] + pad
    cy, cx = yc - 0.6 * r, xc - 0.8 * r  # the centre: the circle passes through the corner
    t = np.linspace(0, 2 * np.pi, 33)
    py, px = cy + r * np.sin(t), cx + r * np.cos(t)
    for i in range(len(t) - 1):
        line_pixels(out, py[i], px[i], py[i + 1], px[i + 1])
    return out


def open_eight(skeleton: np.ndarray, gap: float = 0.2) -> np.ndarray:
    """A type 8 (two closed loops) redrawn as many hands write it: the stroke starts and ends at
    the upper right, and the ends do not meet, so the upper loop is open there. The skeleton is cut
    within `gap` times the height of the upper loop's point furthest up and right (the pen closes
    a cut narrower than its width). A skeleton without two loops is returned unchanged."""
    inside = holes(skeleton)
    ys, xs = np.nonzero(skeleton)
    if len(ys) < 10 or not inside.any():
        return skeleton
    upper = np.zeros_like(inside)  # the inside of the loop that holds the topmost inside pixel
    hy, hx = np.nonzero(inside)
    upper[hy[0], hx[0]] = True
    upper = grown_within(upper, inside)
    if upper.sum() == inside.sum():  # one loop: not an 8
        return skeleton
    uy, ux = np.nonzero(upper)
    ry, rx = np.nonzero(skeleton & (_count(upper) > 0))  # the pixels that touch the loop's inside
    at = int(np.argmax(0.8 * (rx - ux.mean()) - 0.6 * (ry - uy.mean())))  # 37° above right
    r = gap * (ys.max() - ys.min() + 1)
    out = skeleton.copy()
    cut = (ys - ry[at]) ** 2 + (xs - rx[at]) ** 2 <= r * r
    out[ys[cut], xs[cut]] = False
    return out


def crossed_seven(skeleton: np.ndarray, length: float = 0.6) -> np.ndarray:
    """A 7 with a bar across its stem, as some hands write it: a level stroke `length` times the
    glyph's width, centred on the stem at 60 % of the height. A skeleton of under 10 pixels, or with
    no stroke at that height, is returned unchanged."""
    ys, xs = np.nonzero(skeleton)
    if len(ys) < 10:
        return skeleton
    y = int(round(ys.min() + 0.6 * (ys.max() - ys.min())))
    near = np.abs(ys - y) <= 1
    if not near.any():
        return skeleton
    x, half = xs[near].mean(), 0.5 * length * (xs.max() - xs.min() + 1)
    out = skeleton.copy()
    line_pixels(out, y, x - half, y, x + half)
    return out


# ------------------------------------------------------------------------------ hand forms
# digit -> its skeleton redrawn as hands write it
HAND_FORMS = {1: bare_one, 2: looped_two, 4: open_four, 6: small_loop_six, 7: crossed_seven,
              8: open_eight, 9: small_loop_nine}
# the share of `hand` a digit gets where its hand form is one way of writing it among others
HAND_SHARE = {7: 0.2, 8: 0.5}


def hand_drawn(labels: np.ndarray, uniform: np.ndarray, hand: float) -> np.ndarray:
    """Which renders take their digit's hand form: a share `hand` of the digits of HAND_FORMS, times
    HAND_SHARE's factor for a digit whose hand form is one way among others; `uniform` is one draw
    in [0, 1) a render."""
    share = np.array([HAND_SHARE.get(d, 1.0) if d in HAND_FORMS else 0.0 for d in range(10)])
    return uniform < hand * share[labels]
