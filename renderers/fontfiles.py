"""Font discovery (fonttools): which font files can render the ten digits.

A font is used only if its cmap maps the ten digits and its ten glyphs render to ten distinct,
non-empty shapes: placeholder fonts (LastResort draws the same box for every digit) and symbol fonts
are rejected with a reason, and the fonts `exclude` names are left out (EXCLUDE by default).
"""

from __future__ import annotations

import glob
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

DIGITS = "0123456789"
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
GENERIC_GLYPH_NAME = re.compile(r"^(uni[0-9A-Fa-f]{4}|u[0-9A-Fa-f]{4,6}|gid\d+|glyph\d+|cid\d+|g\d+"
                                r"|[a-z]*\d+)$")
GLYPH_SIZE = 64          # font size of the large drawing, in pixels
FONT_SUFFIXES = {".ttf", ".otf"}
# left out of the renders by default: cmti10, TeX's text italic, draws its 2 and 3 as swashes that
# a classifier taught on MNIST (the study's oracle) reads as 8s and 9s half the time or more,
# pen-drawn or not
EXCLUDE = ("cmti10",)


@dataclass
class FontCheck:
    path: str
    ok: bool
    reason: str = ""
    family: str = ""
    sha256: str = ""


def matplotlib_fonts() -> list[Path]:
    import matplotlib
    return sorted((Path(matplotlib.get_data_path()) / "fonts" / "ttf").glob("*.ttf"))


def font_files(extra: list[str] = (), include_default: bool = True) -> list[Path]:
    """matplotlib's bundled fonts plus font files in the given folders or globs."""
    files = matplotlib_fonts() if include_default else []
    for item in extra:
        path = Path(item).expanduser()
        if path.is_dir():
            found = [p for p in sorted(path.rglob("*")) if p.suffix.lower() in FONT_SUFFIXES]
        elif path.is_file():
            found = [path]
        else:
            found = [Path(p) for p in sorted(glob.glob(str(path), recursive=True))]
        files.extend(found)
    return list(dict.fromkeys(files))


def draw_glyph(font: ImageFont.FreeTypeFont, digit: str, stroke: int = 0) -> np.ndarray:
    """The digit drawn large, white on black, cropped to its ink (uint8, maybe empty)."""
    pad = GLYPH_SIZE + 2 * stroke
    img = Image.new("L", (3 * pad, 3 * pad), 0)
    ImageDraw.Draw(img).text((pad, pad), digit, fill=255, font=font, stroke_width=max(stroke, 0),
                             stroke_fill=255)
    if stroke < 0:
        img = img.filter(ImageFilter.MinFilter(2 * -stroke + 1))
    box = img.getbbox()
    return np.asarray(img.crop(box)) if box else np.zeros((0, 0), np.uint8)


def shape_signature(glyph: np.ndarray) -> np.ndarray:
    """A 16×16 binary thumbnail of a glyph, for telling shapes apart."""
    return np.asarray(Image.fromarray(glyph).resize((16, 16), Image.BILINEAR)) > 96


def check_font(path: Path) -> FontCheck:
    """Can this file render the ten digits as ten distinct shapes? Say why not."""
    from fontTools.ttLib import TTFont, TTLibError

    path = Path(path)
    try:
        data = path.read_bytes()
        tt = TTFont(path, lazy=True, fontNumber=0)
        cmap = tt.getBestCmap() or {}
        family = tt["name"].getBestFullName() or path.stem if "name" in tt else path.stem
    except (TTLibError, OSError, AssertionError, KeyError, ValueError, Exception) as exc:  # noqa: BLE001
        return FontCheck(str(path), False, f"not a readable font file ({type(exc).__name__})")
    digest = hashlib.sha256(data).hexdigest()
    missing = [d for d in DIGITS if ord(d) not in cmap]
    if missing:
        return FontCheck(str(path), False, f"no glyph for digit(s) {','.join(missing)}", family,
                         digest)
    for digit, word in zip(DIGITS, DIGIT_NAMES):
        name = cmap[ord(digit)]
        if word not in name.lower() and not GENERIC_GLYPH_NAME.match(name):
            return FontCheck(str(path), False, f"digit {digit} maps to glyph {name!r}, not a digit: a "
                             "symbol or placeholder font",
                             family, digest)
    try:
        font = ImageFont.truetype(str(path), GLYPH_SIZE)
        glyphs = [draw_glyph(font, d) for d in DIGITS]
    except OSError as exc:
        return FontCheck(str(path), False, f"pillow cannot render it ({exc})", family, digest)
    empty = [d for d, g in zip(DIGITS, glyphs) if g.size == 0]
    if empty:
        return FontCheck(str(path), False, f"digit(s) {','.join(empty)} render empty", family,
                         digest)
    sigs = [shape_signature(g) for g in glyphs]
    same = [(DIGITS[i], DIGITS[j]) for i in range(10) for j in range(i + 1, 10)
            if (sigs[i] != sigs[j]).mean() < 0.02]
    if same:
        pairs = ", ".join(f"{a}={b}" for a, b in same[:3])
        return FontCheck(str(path), False, f"digits render the same shape ({pairs}): a placeholder "
                         "or symbol font", family, digest)
    return FontCheck(str(path), True, "", family, digest)


def excluded(files: list[Path], exclude: list[str]) -> set[str]:
    """The paths among `files` whose file stem (any case) `exclude` names; ValueError naming any
    name that matches none of them."""
    names = {n.lower() for n in exclude}
    hits = {str(f) for f in files if Path(f).stem.lower() in names}
    unknown = sorted(names - {Path(f).stem.lower() for f in hits})
    if unknown:
        raise ValueError(f"fonts.exclude names {', '.join(map(repr, unknown))}, which is no font file "
                         "found (give file stems; `pipeline render fonts --list` lists the files)")
    return hits


def discover(extra: list[str] = (), include_default: bool = True,
             exclude: list[str] | None = None) -> list[FontCheck]:
    """Every font found, checked; those `exclude` names (None: EXCLUDE, where found) are rejected
    as left out."""
    files = font_files(extra, include_default)
    if exclude is None:
        exclude = [n for n in EXCLUDE if any(Path(f).stem.lower() == n for f in files)]
    out = excluded(files, exclude)
    checks = [check_font(p) for p in files]
    for c in checks:
        if c.ok and c.path in out:
            c.ok, c.reason = False, "left out by fonts.exclude"
    return checks
