"""Differentiable augmentation of every discriminator input (DiffAugment, Zhao et al. 2020).

The same random policy is applied to real and generated images, and it is differentiable with
respect to the images, so the generator still gets gradients through it. With 55 real images a
discriminator otherwise memorises them within a few hundred steps. The ops: translation by up to
1/8 of the size, one cutout square of half the size, a brightness shift in [-0.5, 0.5], and a small
rotation and isotropic scaling (`affine`: up to 15 degrees, 0.9-1.1x, bilinear). The refiner's default
policy is translation and cutout: a brightness shift of up to a quarter of the range hides the
absolute grey levels of a stroke, the easiest tell between renders and real digits, from the
discriminator.

With `p` < 1 each op is applied to each image with probability p, as in adaptive discriminator
augmentation (ADA, Karras et al. 2020): below p = 0.8 or so the augmented distribution still tells
the original one, so the generator does not learn to draw augmented digits.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

POLICY = ("translation", "cutout")


def brightness(x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    return x + (torch.rand(x.shape[0], 1, 1, 1, generator=gen, device=x.device) - 0.5)


def translation(x: torch.Tensor, gen: torch.Generator | None = None, ratio: float = 0.125,
                fill: float = -1.0) -> torch.Tensor:
    """Shift each image by up to ratio·size pixels; uncovered pixels get `fill` (black)."""
    n, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sy, sy + 1, (n, 1, 1), generator=gen, device=x.device)
    dx = torch.randint(-sx, sx + 1, (n, 1, 1), generator=gen, device=x.device)
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy + sy).expand(n, h, w)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx + sx).expand(n, h, w)
    padded = F.pad(x, (sx, sx, sy, sy), value=fill)
    batch = torch.arange(n, device=x.device).view(n, 1, 1).expand(n, h, w)
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, gen: torch.Generator | None = None, ratio: float = 0.5) -> torch.Tensor:
    """Zero one square of ratio·size per image, at a random centre (it may hang over the edge)."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h, (n, 1, 1), generator=gen, device=x.device)
    cx = torch.randint(0, w, (n, 1, 1), generator=gen, device=x.device)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (((ys - cy) >= -(ch // 2)) & ((ys - cy) < ch - ch // 2)
              & ((xs - cx) >= -(cw // 2)) & ((xs - cx) < cw - cw // 2))
    return x * (~inside).unsqueeze(1).to(x.dtype)


def affine(x: torch.Tensor, gen: torch.Generator | None = None, degrees: float = 15.0,
           scale: float = 0.1) -> torch.Tensor:
    """Rotate each image by up to `degrees` and scale it by 1 ± `scale` about its centre (bilinear);
    uncovered pixels are black. Small enough that a 6 stays a 6."""
    n = x.shape[0]
    angle = (torch.rand(n, generator=gen, device=x.device) * 2 - 1) * math.radians(degrees)
    zoom = 1 + (torch.rand(n, generator=gen, device=x.device) * 2 - 1) * scale
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1


OPS = {"brightness": brightness, "translation": translation, "cutout": cutout, "affine": affine}
ADA_INTERVAL = 4  # steps between adjustments of ADA's augmentation probability p
ADA_RAMP = 100    # steps over which p can go from 0 to 1


def adapt(p: float, called_real: float, target: float) -> float:
    """ADA's update of p after ADA_INTERVAL steps: up by ADA_INTERVAL / ADA_RAMP while the
    discriminator calls more than `target` of its training real images real (it is memorising
    them), down otherwise; p stays within [0, 1]."""
    move = ADA_INTERVAL / ADA_RAMP * (1 if called_real > target else -1)
    return min(1.0, max(0.0, p + move))


def diff_augment(x: torch.Tensor, policy=POLICY, gen: torch.Generator | None = None,
                 p: float = 1.0) -> torch.Tensor:
    """The ops of `policy` in turn; with p < 1 each op reaches each image with probability p."""
    for name in policy:
        if name not in OPS:
            raise ValueError(f"unknown DiffAugment op {name!r}; known: {', '.join(OPS)}")
        if p >= 1:
            x = OPS[name](x, gen)
        elif p > 0:
            keep = torch.rand(x.shape[0], 1, 1, 1, generator=gen, device=x.device) >= p
            x = torch.where(keep, x, OPS[name](x, gen))
    return x
