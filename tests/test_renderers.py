import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from synthgap.data.imageset import read_folder
from synthgap.data.mnist import load_mnist
from renderers import composite as comp
from renderers.augment import coverage, elastic
from renderers.fonts import (HAND_FORMS, HAND_SHARE, center_of_mass, check_font, discover, cached_glyph,
                             hand_drawn, matplotlib_fonts, normalise, pen_glyph, render_digits,
                             stroke_width)
from renderers.pen import (bare_one, crossed_seven, grown_within, holes, looped_two, open_eight, open_four,
                          prune, small_loop_nine, small_loop_six, straight_tail, thin)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def fonts():
    return [c.path for c in discover() if c.ok]


def mpl_font(name):
    return next(p for p in matplotlib_fonts() if p.name == name)


def test_matplotlib_fonts_accepted_and_placeholders_rejected():
    checks = {Path(c.path).name: c for c in discover()}
    assert sum(c.ok for c in checks.values()) >= 20
    assert not checks["LastResortHE-Regular.ttf"].ok
    assert "placeholder" in checks["LastResortHE-Regular.ttf"].reason
    assert not checks["cmsy10.ttf"].ok and "symbol" in checks["cmsy10.ttf"].reason
    assert not checks["DejaVuSansDisplay.ttf"].ok
    assert checks["DejaVuSansDisplay.ttf"].reason == "no glyph for digit(s) 0,1,2,3,4,5,6,7,8,9"
    ok = checks["DejaVuSans.ttf"]
    assert ok.ok and ok.family == "DejaVu Sans Book" and len(ok.sha256) == 64


def test_bad_font_files_are_skipped_with_a_reason(tmp_path):
    (tmp_path / "notafont.ttf").write_text("hello")
    (tmp_path / "nodigits.ttf").write_bytes(mpl_font("STIXSizOneSymReg.ttf").read_bytes())
    bad = check_font(tmp_path / "notafont.ttf")
    assert not bad.ok and bad.reason.startswith("not a readable font file")
    proc = subprocess.run([sys.executable, "-m", "pipeline", "render", "fonts", "--no-default-fonts",
                           "--fonts", str(tmp_path), "--fonts", str(mpl_font("cmr10.ttf")),
                           "--count", "20", "--out", str(tmp_path / "out.npz")],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    skipped = proc.stderr.strip().splitlines()
    assert len(skipped) == 2
    assert any("notafont.ttf: not a readable font file" in s for s in skipped)
    assert any("nodigits.ttf: no glyph for digit" in s for s in skipped)
    assert (tmp_path / "out.npz").is_file() and (tmp_path / "out.png").is_file()


def test_render_list_names_rejections():
    proc = subprocess.run([sys.executable, "-m", "pipeline", "render", "fonts", "--list"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0
    line = next(l for l in proc.stdout.splitlines() if "LastResortHE" in l)
    assert line.startswith("rejected") and "placeholder" in line


def test_rendering_is_deterministic_balanced_and_worker_independent(fonts):
    a, la = render_digits(fonts, 200, seed=3, cfg={"chunk": 60})
    b, lb = render_digits(fonts, 200, seed=3, cfg={"chunk": 60}, workers=2)
    c, _ = render_digits(fonts, 200, seed=4, cfg={"chunk": 60})
    assert a.shape == (200, 1, 28, 28) and a.dtype == np.uint8
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert not np.array_equal(a, c)
    assert np.bincount(la).tolist() == [20] * 10


def test_normalisation_fits_20px_and_centres_mass():
    glyph = Image.new("L", (60, 150), 0)
    glyph.paste(255, (10, 10, 50, 140))  # a 40×130 bar
    img = normalise(glyph, 20.0)
    rows, cols = np.nonzero(img > 0)
    assert rows.max() - rows.min() + 1 <= 21 and cols.max() - cols.min() + 1 <= 8
    cy, cx = center_of_mass(img)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5


def test_mean_centre_of_mass_matches_mnist(fonts):
    images, _ = render_digits(fonts, 500, seed=0)
    mnist = load_mnist()["test_images"][:2000]
    ours = np.mean([center_of_mass(x[0]) for x in images], axis=0)
    theirs = np.mean([center_of_mass(x) for x in mnist], axis=0)
    assert np.abs(ours - theirs).max() < 0.5


def spreads(images):
    """Each image's ink spread across and down (root second moments about its centre of mass), px."""
    w = np.asarray(images, float).reshape(len(images), 28, 28)
    y, x = np.mgrid[:28, :28]
    m = w.sum((1, 2))
    cy, cx = (w * y).sum((1, 2)) / m, (w * x).sum((1, 2)) / m
    return (np.sqrt((w * (x - cx[:, None, None]) ** 2).sum((1, 2)) / m),
            np.sqrt((w * (y - cy[:, None, None]) ** 2).sum((1, 2)) / m))


def test_widen_scales_the_width_alone(fonts):
    plain = {"elastic_alpha": 0.0, "widen": 0.0}
    a, la = render_digits(fonts, 300, seed=2, cfg=plain)
    b, lb = render_digits(fonts, 300, seed=2, cfg={**plain, "widen": 0.15})
    assert np.array_equal(la, lb)
    (xa, ya), (xb, yb) = spreads(a), spreads(b)
    assert 1.08 < np.median(xb / xa) < 1.2 and abs(np.median(yb / ya) - 1) < 0.03


def test_render_sizes_match_mnist(fonts):
    """Type is narrower than hands write; the default width scale brings the renders' median ink
    spread across, and down, within 5 % of MNIST's."""
    ours = [np.median(s) for s in spreads(render_digits(fonts, 1000, seed=0)[0])]
    theirs = [np.median(s) for s in spreads(load_mnist()["train_images"][:2000])]
    assert np.allclose(ours, theirs, rtol=0.05)


def test_elastic_distortion_scale_is_drawn_per_image():
    """The displacement scale is uniform in [0, alpha] per image: some images barely move, others
    move by pixels (with one scale for all, even the calmest 1 % of these move 0.65 px)."""
    y, x = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    ramp = ((x + y) / 54).expand(400, 1, 28, 28).contiguous()  # a change of 1/54 a pixel moved
    out = elastic(ramp, torch.Generator().manual_seed(0), 34.0, 4.0)
    moved = (out - ramp)[:, 0, 6:22, 6:22].abs().mean((1, 2)) * 54  # |dx + dy| inside, pixels
    assert (moved < 0.1).float().mean() > 0.02 and moved.max() > 1.5
    again = elastic(ramp, torch.Generator().manual_seed(0), 34.0, 4.0)
    assert torch.equal(out, again)
    assert torch.equal(elastic(ramp, torch.Generator(), 0.0, 4.0), ramp)


def test_area_coverage_is_the_share_of_each_pixel_the_ink_covers():
    ink = torch.zeros(1, 1, 16, 24)
    ink[..., :, :10] = 1            # 8× resolution: output columns 0 whole, 1 a quarter
    ink[..., 8:12, 16:] = 1         # output row 1, column 2: half of it
    out = coverage(ink.bool(), torch.Generator(), 8)[0, 0].tolist()
    assert out == [[255, 64, 0], [255, 64, 128]]


def test_elastic_at_eight_times_the_resolution_moves_as_far():
    """The field is drawn at the output's resolution and in its pixels, so a ramp distorted at 8×
    and box-averaged moves as the same ramp distorted at 1× (same generator)."""
    n, up = 64, 8
    y, x = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    ramp = ((x + y) / 54).expand(n, 1, 28, 28).contiguous()
    y, x = torch.meshgrid((torch.arange(28.0 * up) + 0.5) / up - 0.5,
                          (torch.arange(28.0 * up) + 0.5) / up - 0.5, indexing="ij")
    fine = ((x + y) / 54).expand(n, 1, 28 * up, 28 * up).contiguous()
    lo = elastic(ramp, torch.Generator().manual_seed(1), 34.0, 4.0)
    hi = torch.nn.functional.avg_pool2d(elastic(fine, torch.Generator().manual_seed(1), 34.0, 4.0,
                                                up), up)
    moved_lo = (lo - ramp)[:, 0, 6:22, 6:22].abs().mean((1, 2)) * 54
    moved_hi = (hi - ramp)[:, 0, 6:22, 6:22].abs().mean((1, 2)) * 54
    assert moved_lo.max() > 1.0
    assert torch.corrcoef(torch.stack([moved_lo, moved_hi]))[0, 1] > 0.95
    assert abs(float(moved_hi.mean() / moved_lo.mean()) - 1) < 0.1


def test_area_edges_render_without_the_soft_haze(fonts):
    """edges = "area": deterministic whatever the worker count, and the faint halo of the soft
    renders (MNIST: about 9 pixels an image at levels 1-16) is gone."""
    area = {"chunk": 60, "edges": "area", "blur": 0.0}
    a, la = render_digits(fonts, 120, seed=3, cfg=area)
    b, lb = render_digits(fonts, 120, seed=3, cfg=area, workers=2)
    assert a.shape == (120, 1, 28, 28) and a.dtype == np.uint8
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    soft, ls = render_digits(fonts, 120, seed=3, cfg={"chunk": 60})
    assert np.array_equal(la, ls)
    faint = {name: ((x >= 1) & (x <= 16)).sum((1, 2, 3)).mean() for name, x in
             (("area", a), ("soft", soft))}
    assert faint["area"] < 15 < 40 < faint["soft"], faint
    assert (a == 255).sum((1, 2, 3)).mean() > 20  # the strokes' cores are fully covered


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


def edge_gradient(img, mask):
    """Mean absolute gradient across the mask's edge (pixel pairs with one side in, one out)."""
    m = mask.bool()
    dx = (img[..., :, 1:] - img[..., :, :-1]).abs()[(m[..., :, 1:] ^ m[..., :, :-1])]
    dy = (img[..., 1:, :] - img[..., :-1, :]).abs()[(m[..., 1:, :] ^ m[..., :-1, :])]
    return float(torch.cat([dx, dy]).mean())


@pytest.mark.parametrize("channels", [1, 3])
def test_blending_modes_and_the_seamless_edge(channels):
    g = torch.Generator().manual_seed(0)
    fg = 0.8 + 0.1 * torch.rand(2, channels, 28, 28, generator=g)
    bg = 0.2 + 0.02 * torch.rand(2, channels, 28, 28, generator=g)
    mask = torch.zeros(2, 1, 28, 28)
    mask[..., 8:20, 6:22] = 1
    hard = comp.blend(fg, bg, mask, "hard", comp.DEFAULTS)
    soft = comp.blend(fg, bg, mask, "gaussian", comp.DEFAULTS)
    seamless = comp.blend(fg, bg, mask, "poisson", comp.DEFAULTS)
    assert torch.equal(hard * (1 - mask), bg * (1 - mask)) and torch.equal(hard * mask, fg * mask)
    h, s, p = (edge_gradient(x, mask.expand_as(x)) for x in (hard, soft, seamless))
    assert h > 0.5 and s < h and p < 0.1 * h
    # Poisson keeps the cut-out's texture: its gradients inside match the foreground's
    inner = (slice(None), slice(None), slice(10, 18), slice(8, 20))
    d_fg = fg[inner][..., 1:] - fg[inner][..., :-1]
    d_p = seamless[inner][..., 1:] - seamless[inner][..., :-1]
    assert float((d_fg - d_p).abs().mean()) < 0.02


def test_composite_labels_rgb_and_halo(fonts):
    fg, labels = render_digits(fonts, 50, seed=1)
    rgb_bg = np.zeros((4, 3, 32, 32), np.uint8)
    rgb_bg[:, 0] = 200
    images, out_labels = comp.composite(fg, labels, 30, "hard", seed=0, backgrounds=rgb_bg,
                                        cfg={"halo": 1, "halo_value": 0.0})
    assert images.shape == (30, 3, 32, 32) and set(out_labels) <= set(labels)
    again, _ = comp.composite(fg, labels, 30, "hard", seed=0, backgrounds=rgb_bg,
                              cfg={"halo": 1, "halo_value": 0.0})
    assert np.array_equal(images, again)
    # a black halo cuts into the red background around the pasted digit
    assert (images[:, 0] == 0).any()


def test_bad_composite_inputs(tmp_path, fonts):
    fg, labels = render_digits(fonts, 10, seed=1)
    with pytest.raises(ValueError, match="unknown blending mode 'soft'"):
        comp.composite(fg, labels, 5, "soft", seed=0)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        read_folder(empty, "RGB")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.new("RGB", (10, 10)).save(mixed / "a.png")
    Image.new("RGB", (12, 10)).save(mixed / "b.png")
    with pytest.raises(ValueError, match="different sizes"):
        read_folder(mixed, "RGB")
    (mixed / "b.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="b.png: unreadable image"):
        read_folder(mixed, "RGB")
    with pytest.raises(ValueError, match="no usable font"):
        render_digits([], 10, seed=0)
