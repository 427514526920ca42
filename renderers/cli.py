"""`pipeline render fonts|composites`: the renderers on their own, writing an ImageSet and a grid PNG."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import numpy as np
import typer

from renderers.composite import CompositesConfig
from synthgap.data.imageset import load_images
from synthgap.errors import fail

app = typer.Typer(help="Render synthetic images on their own: an ImageSet .npz and a sample grid PNG.",
                  no_args_is_help=True)


def save_with_grid(images: np.ndarray, labels: np.ndarray, meta: dict, out: Path) -> Path:
    """Write `out` (.npz) and `out` with .png: the first 100 images in a 10×10 grid."""
    from PIL import Image

    from synthgap.data.imageset import ImageSet, save_imageset

    if out.suffix != ".npz":
        fail(f"--out {out} must end in .npz")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_imageset(ImageSet(images, labels, meta), out)
    k = min(100, len(images))
    c, h, w = images.shape[1:]
    tiles = np.zeros((100, h, w, c), np.uint8)
    tiles[:k] = images[:k].transpose(0, 2, 3, 1)
    grid = tiles.reshape(10, 10, h, w, c).transpose(0, 2, 1, 3, 4).reshape(10 * h, 10 * w, c)
    png = out.with_suffix(".png")
    Image.fromarray(grid[..., 0] if c == 1 else grid).save(png)
    return png


@app.command("fonts")
def fonts_cmd(count: int = typer.Option(1000, "--count", min=1, help="Digits to render."),
              out: Path = typer.Option(Path("fonts.npz"), "--out", help="ImageSet to write."),
              folders: Optional[List[str]] = typer.Option(None, "--fonts", help="Font folder or glob besides matplotlib's (repeatable)."),
              no_default: bool = typer.Option(False, "--no-default-fonts", help="Leave out matplotlib's fonts."),
              exclude: Optional[List[str]] = typer.Option(None, "--exclude", help="Leave out the font file of this stem (repeatable; default: those of fonts.exclude found)."),
              seed: int = typer.Option(0, "--seed"),
              workers: int = typer.Option(1, "--workers", min=1, help="Processes to render with."),
              list_only: bool = typer.Option(False, "--list", help="List every font found, used or rejected with the reason, and stop.")):
    """Render class-balanced digits from font files (MNIST-style normalisation and augmentation)."""
    from renderers.fontfiles import discover, matplotlib_fonts
    from renderers.fonts import render_digits

    try:
        checks = discover(folders or [], include_default=not no_default, exclude=exclude)
    except ValueError as exc:
        fail(str(exc))
    bundled = {str(p) for p in matplotlib_fonts()}
    for c in checks:
        if list_only:
            state = "used    " if c.ok else "rejected"
            typer.echo(f"{state} {c.path}" + (f"  ({c.family})" if c.ok else f"  {c.reason}"))
        elif not c.ok and c.path not in bundled:
            typer.echo(f"skipping {c.path}: {c.reason}", err=True)
    usable = [c.path for c in checks if c.ok]
    if list_only:
        typer.echo(f"{len(usable)} of {len(checks)} fonts usable")
        return
    if not usable:
        fail("no usable font: every font was rejected (see --list); add folders with --fonts")
    images, labels = render_digits(usable, count, seed, workers=workers)
    png = save_with_grid(images, labels, {"source": "font", "seed": seed, "fonts": usable}, out)
    typer.echo(f"wrote {out} ({len(labels)} digits from {len(usable)} of {len(checks)} fonts; "
               f"--list says why the others were skipped) and {png}")


@app.command("composites")
def composites_cmd(foreground: Path = typer.Option(..., "--foreground", help="ImageSet .npz (masked by intensity) or a folder of RGBA cut-outs (masked by alpha)."),
                   backgrounds: Optional[Path] = typer.Option(None, "--backgrounds", help="ImageSet .npz or folder of images; a plain canvas if left out."),
                   mode: str = typer.Option("gaussian", "--mode", help="Blending: hard, gaussian or poisson."),
                   count: int = typer.Option(1000, "--count", min=1),
                   out: Path = typer.Option(Path("composites.npz"), "--out"),
                   halo: int = typer.Option(CompositesConfig.halo, "--halo", min=0, help="Ring of this many pixels around each cut-out (an artefact)."),
                   seed: int = typer.Option(0, "--seed")):
    """Paste foreground cut-outs onto backgrounds with a blending mode."""
    from renderers.composite import MODES, composite

    if mode not in MODES:
        fail(f"--mode {mode!r} is unknown; use one of {', '.join(MODES)}")
    try:
        rgba = foreground.is_dir()
        fg, labels = load_images(foreground, "RGBA")
        bg = load_images(backgrounds, "RGB")[0] if backgrounds is not None else None
        labels = labels if labels is not None else np.full(len(fg), -1, np.int64)
        images, out_labels = composite(fg, labels, count, mode, seed, CompositesConfig(halo=halo),
                                       backgrounds=bg, rgba=rgba)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    png = save_with_grid(images, out_labels, {"source": f"composite-{mode}", "seed": seed}, out)
    typer.echo(f"wrote {out} ({len(out_labels)} composites, {mode}) and {png}")
