import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from synthgap.data.imageset import read_folder
from synthgap.data.mnist import load_mnist
from renderers import composite as comp
from renderers.augment import coverage, elastic
from conftest import mpl_font
from renderers.fontfiles import check_font, discover
from renderers.fonts import FontsConfig, center_of_mass, normalise, render_digits
from renderers.geometry import ink_box, ink_moments

ROOT = Path(__file__).resolve().parent.parent


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
    # fonts.exclude: cmti10 by default, any font by its file stem in any case, unknown names refused
    assert not checks["cmti10.ttf"].ok and checks["cmti10.ttf"].reason == "left out by fonts.exclude"
    chosen = {Path(c.path).name: c for c in discover(exclude=["CMR10"])}
    assert chosen["cmti10.ttf"].ok and not chosen["cmr10.ttf"].ok
    assert sum(c.ok for c in chosen.values()) == sum(c.ok for c in checks.values())
    with pytest.raises(ValueError, match="fonts.exclude names 'cmr1'"):
        discover(exclude=["cmr1"])


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
    a, la = render_digits(fonts, 200, seed=3, chunk=60)
    b, lb = render_digits(fonts, 200, seed=3, chunk=60, workers=2)
    c, _ = render_digits(fonts, 200, seed=4, chunk=60)
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


def test_the_fit_after_the_distortion_ignores_faint_haze():
    """Resampling leaves faint grey around the ink; the fit after the distortion crops to the pixels
    above `cut`, so a faint speck far from the digit does not shrink it."""
    glyph = Image.new("L", (200, 200), 0)
    glyph.paste(255, (80, 20, 120, 180))  # a 40×160 bar
    glyph.putpixel((5, 195), 3)
    bar = lambda img: np.ptp(np.nonzero(img > 127)[0]) + 1
    assert bar(normalise(glyph, 20.0, cut=127)) == 20
    assert bar(normalise(glyph, 20.0)) < 20


def test_mean_centre_of_mass_matches_mnist(fonts):
    images, _ = render_digits(fonts, 500, seed=0)
    mnist = load_mnist()["test_images"][:2000]
    ours = np.mean([center_of_mass(x[0]) for x in images], axis=0)
    theirs = np.mean([center_of_mass(x) for x in mnist], axis=0)
    assert np.abs(ours - theirs).max() < 0.5


def test_widen_scales_the_width_alone(fonts):
    plain = FontsConfig(elastic_alpha=0.0, widen=0.0)
    a, la = render_digits(fonts, 300, seed=2, cfg=plain)
    b, lb = render_digits(fonts, 300, seed=2, cfg=replace(plain, widen=0.15))
    assert np.array_equal(la, lb)
    (xa, ya, _), (xb, yb, _) = ink_moments(a), ink_moments(b)
    assert 1.08 < np.median(xb / xa) < 1.2 and abs(np.median(yb / ya) - 1) < 0.03


def test_render_sizes_match_mnist(fonts):
    """Type is narrower than hands write; the default width scale brings the renders' median ink
    spread across, and down, within 5 % of MNIST's."""
    ours = [np.median(s) for s in ink_moments(render_digits(fonts, 1000, seed=0)[0])[:2]]
    theirs = [np.median(s) for s in ink_moments(load_mnist()["train_images"][:2000])[:2]]
    assert np.allclose(ours, theirs, rtol=0.05)


def test_the_distortion_comes_before_the_fit(fonts):
    """MNIST fitted each handwritten digit in its box. The elastic distortion stands for the hand,
    so it comes before the fit: the distorted renders are as large as undistorted ones and reach the
    border no more often (distorted after the fit, a tenth of them were 23 pixels high or more)."""
    plain, _ = render_digits(fonts, 400, seed=5, cfg=FontsConfig(elastic_alpha=0.0))
    bent, _ = render_digits(fonts, 400, seed=5)
    assert np.abs(bent.astype(int) - plain).mean() > 5
    (h_p, w_p, rim_p), (h_b, w_b, rim_b) = ink_box(plain), ink_box(bent)
    q = [0.1, 0.5, 0.9]
    side_p, side_b = np.quantile(np.maximum(h_p, w_p), q), np.quantile(np.maximum(h_b, w_b), q)
    assert np.abs(side_b - side_p).max() <= 1
    assert (rim_b > 5).mean() <= (rim_p > 5).mean() + 0.03


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
    out = coverage(ink.bool(), 8)[0, 0].tolist()
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
    area = FontsConfig(edges="area", blur=0.0)
    a, la = render_digits(fonts, 120, seed=3, cfg=area, chunk=60)
    b, lb = render_digits(fonts, 120, seed=3, cfg=area, workers=2, chunk=60)
    assert a.shape == (120, 1, 28, 28) and a.dtype == np.uint8
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    soft, ls = render_digits(fonts, 120, seed=3, chunk=60)
    assert np.array_equal(la, ls)
    faint = {name: ((x >= 1) & (x <= 16)).sum((1, 2, 3)).mean() for name, x in
             (("area", a), ("soft", soft))}
    assert faint["area"] < 15 < 40 < faint["soft"], faint
    assert (a == 255).sum((1, 2, 3)).mean() > 20  # the strokes' cores are fully covered


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
    hard = comp.blend(fg, bg, mask, "hard", comp.CompositesConfig())
    soft = comp.blend(fg, bg, mask, "gaussian", comp.CompositesConfig())
    seamless = comp.blend(fg, bg, mask, "poisson", comp.CompositesConfig())
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
                                        cfg=comp.CompositesConfig(halo=1, halo_value=0.0))
    assert images.shape == (30, 3, 32, 32) and set(out_labels) <= set(labels)
    again, _ = comp.composite(fg, labels, 30, "hard", seed=0, backgrounds=rgb_bg,
                              cfg=comp.CompositesConfig(halo=1, halo_value=0.0))
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
