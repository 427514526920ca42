"""The pen renderer: thinning, pruning, pen width, and the hand forms of the digits."""

import numpy as np
import pytest

from conftest import mpl_font
from renderers.fonts import cached_glyph, normalise, pen_glyph, stroke_width
from renderers.pen import (HAND_FORMS, HAND_SHARE, bare_one, crossed_seven, grown_within, hand_drawn, holes,
                          looped_two, open_eight, open_four, prune, small_loop_nine, small_loop_six,
                          straight_tail, thin)


def test_thinning_and_pruning():
    bar = np.zeros((40, 80), bool)
    bar[15:25, 10:70] = True                      # a 10 px thick bar, 60 long
    spur = bar.copy()
    spur[25:31, 39:42] = True                     # plus a 6 px serif hanging below its middle
    skeleton = thin(spur)
    assert skeleton.any() and not (skeleton & ~spur).any()
    # one pixel wide: no 2x2 block of skeleton pixels
    assert not (skeleton[1:, 1:] & skeleton[:-1, 1:] & skeleton[1:, :-1] & skeleton[:-1, :-1]).any()
    assert skeleton[25:].any()                    # the spur leaves a branch
    pruned = prune(skeleton, 8)
    assert not pruned[25:].any()                  # the branch is cut ...
    cols = np.nonzero(pruned.any(0))[0]
    plain = np.nonzero(thin(bar).any(0))[0]
    assert cols.min() == plain.min() and cols.max() == plain.max()  # ... the stroke keeps its ends
    assert np.array_equal(prune(skeleton, 0), skeleton)


def test_pen_renders_have_the_asked_stroke_width():
    """Round-pen glyphs of serif and sans fonts measure about the target width once fitted in the
    box (median over the ten digits; curves and round ends add a little)."""
    from renderers.fonts import transform
    for name in ("DejaVuSerif.ttf", "DejaVuSans-Bold.ttf", "cmr10.ttf"):
        medians = []
        for target in (2.0, 3.0):
            widths = [stroke_width(normalise(transform(pen_glyph(str(mpl_font(name)), d, target,
                                                                 20.0, 8), 0.0, 0.0), 20.0))
                      for d in range(10)]
            medians.append(float(np.median(widths)))
            assert abs(medians[-1] - target) < 0.75, (name, target, widths)
        assert medians[1] > medians[0] + 0.5


def enclosed(ink):
    """The glyph's holes."""
    return holes(np.pad(ink > 0, 1))


def skeleton(path, digit):
    return prune(thin(np.pad(cached_glyph(path, digit, 0) > 127, 2)), 8)


def test_open_four_opens_every_fonts_four_and_leaves_other_shapes(fonts):
    for path in fonts:
        closed, opened = pen_glyph(path, 4, 2.7, 20.0, 0), pen_glyph(path, 4, 2.7, 20.0, 0, True)
        assert enclosed(closed).sum() > 10, path          # type closes the 4 ...
        assert not enclosed(opened).any(), path           # ... the opened one has no hole
        assert opened.any(1).sum() >= 0.85 * closed.any(1).sum(), path  # and keeps its stem
    assert np.array_equal(pen_glyph(fonts[0], 5, 2.7, 20.0, 0, True), pen_glyph(fonts[0], 5, 2.7, 20.0, 0))
    yy, xx = np.mgrid[:60, :60]
    ring = thin(np.abs(np.hypot(yy - 30, xx - 30) - 20) < 3)
    assert np.array_equal(open_four(ring), ring)


def test_bare_one_keeps_the_stem_alone(fonts):
    feet = 0
    for path in fonts:
        typed = skeleton(path, 1)
        bare = bare_one(typed)
        rows = bare.sum(1)
        assert rows.max() <= 2, path                               # one line, no foot, no flag
        assert (rows > 0).sum() >= 0.85 * typed.any(1).sum(), path  # as tall as the 1
        feet += typed.sum(1).max() > 10                             # type's foot: a long row
    assert feet >= 10                                               # which most type 1s have
    line = np.zeros((40, 40), bool)
    line[5:35, 20] = True
    assert np.array_equal(bare_one(line), line)


def loop_share(sk):
    """The share of the height from the top of the loop (the first hole row) to the glyph's bottom."""
    ys = np.nonzero(sk)[0]
    return (ys.max() - np.nonzero(holes(sk))[0].min() + 1) / (ys.max() - ys.min())


@pytest.mark.parametrize("digit", [6, 9])
def test_small_loop_six_and_nine(fonts, digit):
    turn = (lambda sk: np.rot90(sk, 2)) if digit == 9 else (lambda sk: sk)
    hand = small_loop_nine if digit == 9 else small_loop_six
    for path in fonts:
        typed = skeleton(path, digit)
        drawn = hand(typed)
        assert loop_share(turn(typed)) > 0.5, path          # type: a bowl of most of the height
        assert loop_share(turn(drawn)) <= 0.45, path        # hand: a small loop, still closed
        assert drawn.any(1).sum() >= typed.any(1).sum() - 2, path   # and as tall
    line = np.zeros((40, 40), bool)
    line[5:35, 20] = True
    assert np.array_equal(hand(line), line)


def test_small_loop_nine_has_a_straight_tail(fonts):
    for path in fonts:
        drawn = small_loop_nine(skeleton(path, 9))
        ys, xs = np.nonzero(drawn)
        below = ys > np.nonzero(holes(drawn))[0].max() + 1
        assert below.any() and drawn[ys[below].min():].sum(1).max() <= 1, path  # one line
        assert np.ptp(xs[below]) == 0, path                                              # upright
    line = np.zeros((40, 40), bool)
    line[5:35, 20] = True
    assert np.array_equal(straight_tail(line), line)


def test_looped_two_has_a_loop_at_its_bottom_left(fonts):
    for path in fonts:
        typed = skeleton(path, 2)
        drawn = looped_two(typed)
        assert not holes(typed).any(), path                 # type: no loop
        inside = np.nonzero(holes(drawn))
        assert len(inside[0]) > 10, path                     # hand: a loop ...
        ys, xs = np.nonzero(drawn)
        assert inside[0].mean() > ys.min() + 0.7 * np.ptp(ys), path   # ... low
        assert inside[1].mean() < xs.min() + 0.4 * np.ptp(xs), path   # ... and on the left
        assert drawn.any(1).sum() >= typed.any(1).sum(), path         # as tall as the 2
    assert np.array_equal(looped_two(np.zeros((40, 40), bool)), np.zeros((40, 40), bool))


def loops(sk):
    """The row of the centre of each of a skeleton's loops, top first."""
    inside, found = holes(sk), []
    while inside.any():
        loop = np.zeros_like(inside)
        loop[tuple(np.argwhere(inside)[0])] = True
        loop = grown_within(loop, inside)
        found.append(np.nonzero(loop)[0].mean())
        inside &= ~loop
    return found


def test_open_eight_opens_the_upper_loop_at_its_upper_right(fonts):
    for path in fonts:
        typed = skeleton(path, 8)
        drawn = open_eight(typed)
        ys, xs = np.nonzero(typed)
        assert len(loops(typed)) == 2, path                        # type: two closed loops
        assert len(loops(drawn)) == 1, path                        # hand: the lower one alone
        assert loops(drawn)[0] > ys.min() + 0.5 * np.ptp(ys), path
        cut_y, cut_x = np.nonzero(typed & ~drawn)
        assert cut_y.mean() < ys.min() + 0.45 * np.ptp(ys), path  # cut in the upper part ...
        assert cut_x.mean() > xs.min() + 0.5 * np.ptp(xs), path   # ... on the right
        assert drawn.any(1).sum() >= 0.9 * typed.any(1).sum(), path  # about as tall as the 8
    yy, xx = np.mgrid[:60, :60]
    ring = thin(np.abs(np.hypot(yy - 30, xx - 30) - 20) < 3)
    assert np.array_equal(open_eight(ring), ring)                 # one loop: not an 8


def test_crossed_seven_has_a_bar_across_its_stem(fonts):
    for path in fonts:
        typed = skeleton(path, 7)
        drawn = crossed_seven(typed)
        ys, xs = np.nonzero(typed)
        width = np.ptp(xs) + 1
        rows = drawn.sum(1) - typed.sum(1)
        bar = int(np.argmax(rows))
        assert rows[bar] >= 0.5 * width, path                               # a long level stroke
        assert abs(bar - (ys.min() + 0.6 * np.ptp(ys))) <= 1, path          # at 60 % of the height
        assert np.array_equal(drawn[:ys.min() + np.ptp(ys) // 2], typed[:ys.min() + np.ptp(ys) // 2]), path
        bar_xs = np.nonzero(drawn[bar] & ~typed[bar])[0]
        stem_x = xs[np.abs(ys - bar) <= 1].mean()
        assert bar_xs.min() < stem_x < bar_xs.max(), path                   # across the stem
    assert np.array_equal(crossed_seven(np.zeros((40, 40), bool)), np.zeros((40, 40), bool))


def test_hand_share_of_each_digit():
    labels = np.repeat(np.arange(10), 4000)
    uniform = np.random.default_rng(0).random(len(labels))
    drawn = hand_drawn(labels, uniform, 0.8)
    for d in range(10):
        want = 0.8 * HAND_SHARE.get(d, 1.0) if d in HAND_FORMS else 0.0
        assert abs(drawn[labels == d].mean() - want) < 0.03, d
    assert not hand_drawn(labels, uniform, 0.0).any()
    assert 0 < HAND_SHARE[7] < HAND_SHARE[8] < 1                 # the crossed 7 is the rarer form
