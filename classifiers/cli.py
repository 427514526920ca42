"""`pipeline detect`: the real/synthetic instruments on any two image sets."""

from __future__ import annotations

from pathlib import Path

import typer

from classifiers.detector import GapConfig
from synthgap.data.imageset import load_images
from synthgap.errors import fail


def same_channels(a, b):
    """Grayscale against RGB: repeat the gray channel so both sets have three."""
    import numpy as np

    if a.shape[1] == b.shape[1]:
        return a, b
    if 1 in (a.shape[1], b.shape[1]):
        return (np.repeat(a, 3, 1) if a.shape[1] == 1 else a), (np.repeat(b, 3, 1) if b.shape[1] == 1 else b)
    raise ValueError(f"cannot compare {a.shape[1]}- and {b.shape[1]}-channel images")


def resize_to(images, size):
    """uint8 [N, C, H, W] resized (area) to size = (H, W) when it differs."""
    import torch
    import torch.nn.functional as F

    if tuple(images.shape[-2:]) == tuple(size):
        return images
    x = F.interpolate(torch.as_tensor(images).float(), size=tuple(size), mode="area")
    return x.round().clamp(0, 255).to(torch.uint8).numpy()


def detect_cmd(real: Path = typer.Option(..., "--real", help="Real images: a folder (any size, RGB or grayscale) or an ImageSet .npz."),
               synthetic: Path = typer.Option(..., "--synthetic", help="Synthetic images: a folder or an ImageSet .npz."),
               steps: int = typer.Option(GapConfig.steps, "--steps", min=1, help="Optimiser steps of each detector."),
               samples: int = typer.Option(10000, "--samples", min=8, help="At most this many images a side."),
               seed: int = typer.Option(0, "--seed"),
               device: str = typer.Option("auto", "--device", help="auto, cpu or cuda.")):
    """How well can real be told from synthetic? C2ST on pixels and on Fourier log-magnitude, and a
    Deep SVDD trained on half the real images only. AUC 0.5 means no detectable gap."""
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from classifiers.detector import c2st, deep_svdd
    from classifiers.digits import resolve_device

    try:
        a, _ = load_images(real, "auto")
        b, _ = load_images(synthetic, "auto")
        a, b = same_channels(a, b)
        b = resize_to(b, a.shape[-2:])  # a size difference alone would give the game away
        dev = resolve_device(device)
        rng = np.random.default_rng(seed)
        a = a[rng.permutation(len(a))[:samples]]
        b = b[rng.permutation(len(b))[:samples]]
        rows = [c2st(a, b, kind, {"steps": steps}, seed, dev) for kind in ("pixel", "fourier")]
        half = len(a) // 2
        rows.append(deep_svdd(a[:half], a[half:], b, {"steps": steps}, seed, dev))
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    table = Table(title=f"{real} (real, {len(a)}) vs {synthetic} (synthetic, {len(b)})")
    for col in ("instrument", "AUC", "95 % CI", "accuracy", "p (acc > 0.5)", "test images"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["instrument"], f"{r['auc']:.3f}", f"{r['auc_ci_low']:.3f} – {r['auc_ci_high']:.3f}",
                      f"{r['accuracy']:.3f}", f"{r['p_value']:.2g}", str(r["n_test"]))
    Console().print(table)
