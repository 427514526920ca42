"""What the refiner's logs measure: a discriminator's accuracy on held-out images, and image grids."""

from __future__ import annotations

import torch

from gan.losses import realness
from gan.networks import shape_view, to_signed, warp_image


@torch.no_grad()
def held_out_accuracy(G, D, real: torch.Tensor, real_labels, renders: torch.Tensor, labels,
                      gen: torch.Generator, shape: bool = False) -> float:
    """D's accuracy (threshold 0.5) on held-out real images against freshly refined renders,
    half and half, without augmentation; with `shape`, on the shape view of the real images and of
    the warped renders (the shape discriminator's inputs: the appearance step is not run)."""
    x = to_signed(renders)
    z = G.noise_like(x, gen) if G.warp is not None else None
    fake = shape_view(warp_image(x, G.field(x, z))) if shape else G(x, z)
    real = shape_view(to_signed(real)) if shape else to_signed(real)
    right_real = (realness(D(real, real_labels)) > 0.5).float().mean()
    right_fake = (realness(D(fake, labels)) <= 0.5).float().mean()
    return float((right_real + right_fake) / 2)


@torch.no_grad()
def triptych(*columns: torch.Tensor, n: int = 8) -> torch.Tensor:
    """A [C, H, W] grid: one row per image, one column per stage (e.g. input | warped | G(x))."""
    from torchvision.utils import make_grid

    n = min(n, len(columns[0]))
    rows = torch.stack([c[:n] for c in columns], 1).flatten(0, 1)
    return make_grid(rows.float().cpu().add(1).div(2).clamp(0, 1), nrow=len(columns), pad_value=0.5)
