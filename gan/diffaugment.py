"""Differentiable augmentation of every discriminator input (DiffAugment, Zhao et al. 2020).

The same random policy is applied to real and generated images, and it is differentiable with
respect to the images, so the generator still gets gradients through it. With 55 real images a
discriminator otherwise memorises them within a few hundred steps. The ops: translation by up to
1/8 of the size, one cutout square of half the size, and a brightness shift in [-0.5, 0.5]. The
refiner's default policy is translation and cutout: a brightness shift of up to a quarter of the
range hides the absolute grey levels of a stroke, the easiest tell between renders and real digits,
from the discriminator.
"""

from __future__ import annotations

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


OPS = {"brightness": brightness, "translation": translation, "cutout": cutout}


def diff_augment(x: torch.Tensor, policy=POLICY, gen: torch.Generator | None = None) -> torch.Tensor:
    for name in policy:
        if name not in OPS:
            raise ValueError(f"unknown DiffAugment op {name!r}; known: {', '.join(OPS)}")
        x = OPS[name](x, gen)
    return x
