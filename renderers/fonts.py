"""MNIST-style digit rendering (pillow) from the fonts renderers/fontfiles.py finds.

Rendering follows MNIST's normalisation, which fitted each handwritten digit in its box: the glyph
is drawn large, slanted, rotated and thickened there, elastically distorted (standing for the hand),
cropped to its ink, scaled to fit a 20×20 box keeping its aspect ratio (anti-aliased), and placed in
28×28 with its centre of mass at the centre.

A share of the renders (`pen`) is drawn as a pen would: the glyph is thinned to its centre line,
short side branches (serifs) are pruned and the line is redrawn with a round pen, which removes the
thick/thin contrast of type. A share of the 1s, 2s, 4s, 6s and 9s (`hand`) is drawn as hands write
them (HAND_FORMS): a classifier taught only the type forms reads handwriting wrong (a closed 4 as a
9, a 1 with a foot as a 2, a looped 2 as a 3 or an 8, a 6 whose bowl fills two thirds of it as a 0 or
an 8, a straight-stemmed 9 as a 4 or a 7). The crossed 7 and the open 8 are hand forms that some
hands write and others not: they take a share of `hand` (HAND_SHARE).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageFont

from renderers.fontfiles import DIGITS, EXCLUDE, GLYPH_SIZE, draw_glyph
from renderers.pen import HAND_FORMS, disk_dilate, hand_drawn, prune, thin

EDGES = ("soft", "area")  # the edge models of FontsConfig.edges
AREA_UP = 8              # edges = "area": the ink is drawn at this multiple of 28×28
FIT_UP = 4               # edges = "soft": the glyph is distorted at this multiple of 28×28,
CUT = 127                # then fitted to its box by the pixels above this level (its ink)


# ------------------------------------------------------------------------------------- rendering
def center_of_mass(img: np.ndarray) -> tuple[float, float]:
    w = img.astype(np.float64)
    total = w.sum()
    rows, cols = np.arange(w.shape[0]), np.arange(w.shape[1])
    return float((w.sum(1) * rows).sum() / total), float((w.sum(0) * cols).sum() / total)


def fitted(glyph: Image.Image, side: float, resample, cut: int = 0) -> Image.Image | None:
    """The glyph cropped to its ink (pixels above `cut`) and resized so its longer side is `side`
    pixels, keeping the aspect ratio; None without ink."""
    bbox = (glyph.point(lambda v: 255 * (v > cut)) if cut else glyph).getbbox()
    if bbox is None:
        return None
    glyph = glyph.crop(bbox)
    w, h = glyph.size
    k = side / max(w, h)
    return glyph.resize((max(1, round(w * k)), max(1, round(h * k))), resample)


def centred(small: np.ndarray, up: int = 1) -> np.ndarray:
    """`small` placed in a (28·up)² canvas of its dtype with its centre of mass at the centre,
    moved by whole output pixels (of `up` canvas pixels each)."""
    out = np.zeros((28 * up, 28 * up), small.dtype)
    if not small.any():
        return out
    cy, cx = center_of_mass(small)
    top, left = int(round(14 - cy / up)) * up, int(round(14 - cx / up)) * up
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + small.shape[0], 28 * up), min(left + small.shape[1], 28 * up)
    out[y0:y1, x0:x1] = small[y0 - top:y1 - top, x0 - left:x1 - left]
    return out


def normalise(glyph: Image.Image, box: float, cut: int = 0) -> np.ndarray:
    """MNIST's normalisation: crop to ink (pixels above `cut`), fit in a box×box square keeping
    the aspect ratio (anti-aliased), place in 28×28 with the centre of mass at (14, 14)."""
    small = fitted(glyph, box, Image.LANCZOS, cut)
    if small is None:
        return np.zeros((28, 28), np.uint8)
    small = np.clip(np.asarray(small).astype(np.float32), 0, 255)
    return centred(small).round().astype(np.uint8)


def normalise_bilevel(glyph: Image.Image, box: float, up: int) -> np.ndarray:
    """`normalise` at `up` times the resolution, the ink kept bilevel: bool [28·up, 28·up], the
    centre of mass moved to (14, 14) by whole output pixels. `coverage` turns it into grey."""
    big = fitted(glyph, box * up, Image.BILINEAR)
    if big is None:
        return np.zeros((28 * up, 28 * up), bool)
    return centred(np.asarray(big) > 127, up)


def transform(glyph: np.ndarray, rotate_deg: float, shear: float,
              aspect: float = 1.0) -> Image.Image:
    """Widen by `aspect`, slant (x += shear * y) and rotate a large glyph, on a canvas big enough
    to keep it whole."""
    h, w = glyph.shape
    side = int(math.ceil(math.hypot(h, w) * (1 + abs(shear)) * max(1.0, aspect))) + 4
    canvas = Image.new("L", (side, side), 0)
    canvas.paste(Image.fromarray(glyph), ((side - w) // 2, (side - h) // 2))
    a = math.radians(rotate_deg)
    cos, sin = math.cos(a), math.sin(a)
    # output -> input map: undo rotation, the shear, then the widening, about the canvas centre
    m = (np.array([[1 / aspect, 0], [0, 1]]) @ np.array([[1, -shear], [0, 1]])
         @ np.array([[cos, sin], [-sin, cos]]))
    c = side / 2
    offset = np.array([c, c]) - m @ np.array([c, c])
    coeffs = (m[0, 0], m[0, 1], offset[0], m[1, 0], m[1, 1], offset[1])
    return canvas.transform((side, side), Image.AFFINE, coeffs, resample=Image.BILINEAR)


# ------------------------------------------------------------------------------ batch rendering
@dataclass
class FontsConfig:
    """[fonts]: the font renders (the rendering knobs are `pipeline render fonts`' defaults too)."""
    folders: list[str] = field(default_factory=list)  # font folders or globs besides matplotlib's
    exclude: list[str] = field(default_factory=lambda: list(EXCLUDE))  # fonts left out, by file
    #                            stem, any case (`pipeline render fonts --list` shows the files)
    seed: int = 0
    width_min: float = 2.0     # pen width in output pixels before blur, uniform in [min, max]; each
    width_max: float = 3.4     # font is thinned or thickened to it (renders then measure like MNIST)
    restroke: bool = True      # false: type renders keep the font's own stroke (pen renders not)
    pen: float = 0.5           # share drawn with a round pen along the glyph's centre line
    prune: int = 8             # pen renders: side branches up to this many pixels (of 64) are cut
    hand: float = 0.8          # share of 1s, 2s, 4s, 6s, 9s drawn as hands write them (renderers/pen.py;
    #                            7s and 8s: HAND_SHARE of it)
    shear: float = 0.3         # slant: x += shear * y, uniform in [-shear, shear]
    rotate: float = 12.0       # degrees
    box_min: float = 19.0      # the glyph is fitted in a box of this many pixels (MNIST: 20, and
    box_max: float = 21.0      # nine tenths of its digits are 19 or 20 pixels high)
    widen: float = 0.12        # width scale exp(widen + uniform(-aspect, aspect)): type is narrower
    aspect: float = 0.0        # than hands write (MNIST's ink spreads 12 % wider across than type's)
    elastic_alpha: float = 34.0  # elastic distortion: the largest displacement scale in pixels,
    elastic_sigma: float = 4.0   # drawn per image in [0, alpha] (Simard et al. 2003: 34 and 4)
    blur: float = 0.6          # Gaussian blur, largest sigma in pixels
    noise: float = 0.0         # additive Gaussian noise, largest std (0..1)
    edges: str = "soft"        # soft: the anti-aliased glyph distorted at 4×, fitted to its box at
    #                            28×28 (Lanczos) and blurred; area: the glyph kept bilevel at 8× (ink
    #                            or not), distorted and fitted there, each pixel's grey the share of
    #                            it the ink covers (MNIST's normalisation of bilevel NIST digits);
    #                            blur and noise follow as set


# The renderers of the regimes study (experiment.renderers): [fonts] keys over [fonts]. `type` draws
# each font's glyphs as the font does, with MNIST's normalisation alone (box, centre of mass, blur);
# `type+distort` adds slant, rotation, MNIST's stroke widths and elastic distortion; `hand` is
# [fonts] as it is: pen strokes and hand forms too.
RENDERERS = {
    "type": {"pen": 0.0, "hand": 0.0, "restroke": False, "shear": 0.0, "rotate": 0.0,
             "widen": 0.0, "aspect": 0.0, "elastic_alpha": 0.0},
    "type+distort": {"pen": 0.0, "hand": 0.0, "widen": 0.0, "aspect": 0.0},
    "hand": {},
}

CHUNK = 2000  # renders a process renders at once (each chunk draws from its own seed)

_glyphs: dict = {}


def cached_glyph(path: str, digit: int, stroke: int) -> np.ndarray:
    key = (path, digit, stroke)
    if key not in _glyphs:
        font = ImageFont.truetype(path, GLYPH_SIZE)
        _glyphs[key] = draw_glyph(font, DIGITS[digit], stroke)
    return _glyphs[key]


def stroke_width(glyph: np.ndarray) -> float:
    """Mean stroke width of a glyph in pixels: twice its ink area over its perimeter (a long stroke
    of width w and length L has area wL and perimeter about 2L)."""
    ink = glyph > 127
    inner = ink.copy()
    inner[1:] &= ink[:-1]
    inner[:-1] &= ink[1:]
    inner[:, 1:] &= ink[:, :-1]
    inner[:, :-1] &= ink[:, 1:]
    inner[[0, -1]] = False
    inner[:, [0, -1]] = False
    edge = (ink & ~inner).sum()
    return 2.0 * ink.sum() / max(int(edge), 1)


_widths: dict = {}


def stroke_for(path: str, digit: int, target: float, box: float) -> int:
    """The thickening (pixels of the 64 px drawing, negative thins) that gives this font's digit a
    stroke `target` pixels wide once fitted in a `box`-pixel box: per-font stroke normalisation, so
    hairline and heavy fonts both land in MNIST's pen widths.

    With the glyph's own width w and size L, thickening by s gives (w + 2s) * box / (L + 2s)."""
    key = (path, digit)
    if key not in _widths:
        glyph = cached_glyph(path, digit, 0)
        _widths[key] = (stroke_width(glyph), max(glyph.shape))
    w, size = _widths[key]
    s = (target * size - w * box) / (2 * (box - target))
    return int(np.clip(round(s), -max(0, math.floor((w - 2) / 2)), 12))


# ------------------------------------------------------------------------------ pen rendering
_skeletons: dict = {}
_pens: dict = {}


def pen_glyph(path: str, digit: int, target: float, box: float, prune_length: int,
              hand: bool = False) -> np.ndarray:
    """The glyph's centre line (serifs pruned) redrawn with a round pen whose width is `target`
    pixels once the glyph is fitted in a `box`-pixel box: an even stroke, as a pen writes.
    With `hand`, a digit of HAND_FORMS is drawn in its hand form."""
    key = (path, digit, prune_length, hand and digit in HAND_FORMS)
    if key not in _skeletons:
        ink = np.pad(cached_glyph(path, digit, 0) > 127, 2)
        skeleton = prune(thin(ink), prune_length)
        if key[-1]:
            skeleton = HAND_FORMS[digit](skeleton)
        ys, xs = np.nonzero(skeleton)
        _skeletons[key] = skeleton, max(np.ptp(ys), np.ptp(xs)) + 1
    skeleton, size = _skeletons[key]
    # a pen of width 2r + 1 on a skeleton of size L gives (2r + 1) * box / (L + 2r) pixels
    radius = int(np.clip(round((target * size - box) / (2 * (box - target))), 1, 12))
    if (key, radius) not in _pens:
        _pens[key, radius] = disk_dilate(skeleton, radius).astype(np.uint8) * 255
    return _pens[key, radius]


def render_chunk(fonts: list[str], labels: np.ndarray, cfg: FontsConfig, seed: int) -> np.ndarray:
    """Render `labels` (digits) with random fonts and geometric augmentation: uint8 [n, 28, 28]."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    font_idx = rng.integers(len(fonts), size=n)
    widths = rng.uniform(cfg.width_min, cfg.width_max, size=n)
    shears = rng.uniform(-cfg.shear, cfg.shear, size=n)
    angles = rng.uniform(-cfg.rotate, cfg.rotate, size=n)
    boxes = rng.uniform(cfg.box_min, cfg.box_max, size=n)
    aspects = np.exp(cfg.widen + rng.uniform(-cfg.aspect, cfg.aspect, size=n))
    pens = rng.random(n) < cfg.pen
    hands = hand_drawn(labels, rng.random(n), cfg.hand)
    pens |= hands
    prune_length = int(cfg.prune)
    area = cfg.edges == "area"
    up = AREA_UP if area else FIT_UP
    big = np.empty((n, 28 * up, 28 * up), bool if area else np.uint8)
    for i in range(n):
        path, digit = fonts[font_idx[i]], int(labels[i])
        if pens[i]:
            # a 4 is not pruned: in bold type its bar's end is a short branch, and without it
            # a 4 is a loop on a stem, which is how hands write a 9
            glyph = pen_glyph(path, digit, widths[i], boxes[i], 0 if digit == 4 else prune_length,
                              bool(hands[i]))
        else:
            glyph = cached_glyph(path, digit, stroke_for(path, digit, widths[i], boxes[i])
                                 if cfg.restroke else 0)
        glyph = transform(glyph, angles[i], shears[i], aspects[i])
        if area:
            big[i] = normalise_bilevel(glyph, boxes[i], up)
        else:
            fit = fitted(glyph, boxes[i] * up, Image.LANCZOS)
            big[i] = 0 if fit is None else centred(np.asarray(fit), up)
    import torch

    from renderers.augment import coverage, elastic

    # MNIST fitted each handwritten digit in its box: the distortion, which stands for the hand,
    # comes before the fit, so a distorted render is as high and as far from the border as MNIST's
    gen = torch.Generator().manual_seed(seed)
    out = np.empty((n, 28 * up, 28 * up) if area else (n, 28, 28), big.dtype)
    for i in range(0, n, 250):
        x = torch.from_numpy(big[i:i + 250, None]).float() * (255 if area else 1)
        x = elastic(x, gen, cfg.elastic_alpha, cfg.elastic_sigma, up)
        for j, image in enumerate(x[:, 0].round().clamp(0, 255).to(torch.uint8).numpy()):
            image = Image.fromarray(image)
            out[i + j] = (normalise_bilevel(image, boxes[i + j], up) if area
                          else normalise(image, boxes[i + j], CUT))
    return coverage(torch.from_numpy(out[:, None]), up)[:, 0].numpy() if area else out


def _render_job(args):
    import torch

    torch.set_num_threads(1)  # one worker a core
    return render_chunk(*args)


def render_digits(fonts: list[str], n: int, seed: int, cfg: FontsConfig | None = None,
                  workers: int = 1, progress=None, chunk: int = CHUNK):
    """`n` class-balanced digit renders with `cfg`'s rendering knobs (its font folders, exclusions
    and seed are the caller's to use), deterministic for a seed whatever the worker count.

    Returns (images uint8 [n, 1, 28, 28], labels int64 [n]). Chunks of `chunk` images are rendered,
    distorted and fitted in parallel processes; blur and noise follow in torch.
    """
    from renderers.augment import augment_batch

    cfg = cfg or FontsConfig()
    if not fonts:
        raise ValueError("no usable font to render with; `pipeline render fonts --list` says why")
    seq = np.random.SeedSequence(seed)
    labels = np.random.default_rng(seq.spawn(1)[0]).permutation(np.arange(n) % 10)
    jobs = [(list(fonts), labels[i:i + chunk], cfg, int(s.generate_state(1)[0]))
            for i, s in zip(range(0, n, chunk), seq.spawn(max(1, math.ceil(n / chunk)) + 1)[1:])]
    parts = []
    if workers > 1 and len(jobs) > 1:
        import multiprocessing as mp
        with mp.get_context("spawn").Pool(workers) as pool:
            for part in pool.imap(_render_job, jobs):
                parts.append(part)
                progress and progress(sum(map(len, parts)), n)
    else:
        for job in jobs:
            parts.append(render_chunk(*job))
            progress and progress(sum(map(len, parts)), n)
    images = np.concatenate(parts)[:, None] if parts else np.zeros((0, 1, 28, 28), np.uint8)
    images = augment_batch(images, seed, 0.0, cfg.elastic_sigma, cfg.blur, cfg.noise)
    return images, labels.astype(np.int64)
