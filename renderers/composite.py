"""Cut-and-paste composites: foreground cut-outs with masks pasted onto backgrounds.

Cut-outs come from an ImageSet (masked by intensity: font glyphs or real digits) or a folder of RGBA
images (masked by alpha); backgrounds from an ImageSet, a folder of images or a plain canvas. Each
cut-out is placed at a random position, scale and rotation and blended with one of three modes:

- `hard`: the binary mask, the cut-out's edge is a step;
- `gaussian`: the mask feathered by a Gaussian of `feather` pixels;
- `poisson`: seamless cloning (Pérez et al. 2003): inside the mask the result keeps the cut-out's
  gradients and meets the background at the mask's edge, solved by conjugate gradients in torch.

`halo` adds the typical artefact of a careless cut: a ring of `halo` pixels of value `halo_value`
around the cut-out. Works for grayscale and RGB (a grayscale cut-out on an RGB background is repeated
over the channels). Labels come from the foreground.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from renderers.augment import blur

MODES = ("hard", "gaussian", "poisson")


@dataclass
class CompositesConfig:
    """[composites]: cut-and-paste composites of the font renders on a plain canvas."""
    modes: list[str] = field(default_factory=lambda: list(MODES))  # blending modes rendered
    train_mode: str = "gaussian"   # the mode the real+composite mixture trains on
    count: int = 20000
    seed: int = 0
    threshold: float = 0.2         # cut-out mask: intensity above this
    scale_min: float = 0.85
    scale_max: float = 1.1
    rotate: float = 10.0
    shift: float = 2.0
    feather: float = 1.0           # gaussian mode: feather sigma in pixels
    halo: int = 1                  # artefact: ring of this many pixels around the cut-out
    halo_value: float = 0.5
    canvas_min: float = 0.0        # plain canvas level range (0..1) and grain: MNIST's black by
    canvas_max: float = 0.0        # default, so that the blending mode and the halo are all that
    canvas_noise: float = 0.0      # differ (a grey, grainy canvas is told apart whatever the mode)
    poisson_iters: int = 300


def cutouts_from_images(images: np.ndarray, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(foreground float [N,C,H,W], mask [N,1,H,W]) from uint8 images masked by intensity."""
    x = torch.as_tensor(images).float() / 255
    return x, (x.amax(1, keepdim=True) > threshold).float()


def cutouts_from_rgba(images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.as_tensor(images).float() / 255
    return x[:, :-1], (x[:, -1:] > 0.5).float()


def plain_canvas(n: int, channels: int, size: tuple[int, int], gen: torch.Generator,
                 low: float, high: float, noise: float) -> torch.Tensor:
    """Flat backgrounds of a random level in [low, high] with smooth noise."""
    level = low + torch.rand(n, 1, 1, 1, generator=gen) * (high - low)
    grain = torch.randn(n, channels, *size, generator=gen)
    grain = blur(grain, torch.full((n,), 1.5)) * noise * 3
    return (level + grain).clamp(0, 1)


def place(fg: torch.Tensor, mask: torch.Tensor, size: tuple[int, int], gen: torch.Generator,
          cfg: CompositesConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp cut-outs onto a canvas of `size`: random scale, rotation and shift."""
    n = len(fg)

    def uniform(a, b):
        return a + torch.rand(n, generator=gen) * (b - a)

    s = uniform(cfg.scale_min, cfg.scale_max) * max(fg.shape[-2:]) / max(size)
    a = uniform(-math.radians(cfg.rotate), math.radians(cfg.rotate))
    h, w = size
    tx, ty = uniform(-1, 1) * 2 * cfg.shift / w, uniform(-1, 1) * 2 * cfg.shift / h
    cos, sin = torch.cos(a) / s, torch.sin(a) / s
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
    warped = F.grid_sample(torch.cat([fg, mask], 1), grid, align_corners=False)
    return warped[:, :-1], (warped[:, -1:] > 0.5).float()


def add_halo(fg: torch.Tensor, mask: torch.Tensor, width: int, value: float):
    """Grow the mask by `width` pixels and paint the ring with `value`."""
    if width <= 0:
        return fg, mask
    grown = F.max_pool2d(mask, 2 * width + 1, stride=1, padding=width)
    ring = grown - mask
    return fg * (1 - ring) + value * ring, grown


def neighbours_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of the 4-neighbours inside the image (missing neighbours count 0)."""
    p = F.pad(x, (1, 1, 1, 1))
    return p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:]


def poisson_blend(fg: torch.Tensor, bg: torch.Tensor, mask: torch.Tensor,
                  iters: int = 300) -> torch.Tensor:
    """Seamless cloning: inside `mask` solve  Δf = Δfg  with f = bg outside, by batched CG."""
    omega = mask.expand_as(fg)
    count = neighbours_sum(torch.ones_like(fg[:1, :1])).expand_as(fg)   # in-image neighbours
    guide = count * fg - neighbours_sum(fg)                             # -Δ fg
    b = (guide + neighbours_sum(bg * (1 - omega))) * omega

    def A(x):
        return (count * x - neighbours_sum(x * omega)) * omega

    x = bg * omega
    r = b - A(x)
    p, rr = r.clone(), (r * r).sum((1, 2, 3), keepdim=True)
    for _ in range(iters):
        ap = A(p)
        alpha = rr / (p * ap).sum((1, 2, 3), keepdim=True).clamp_min(1e-12)
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = (r * r).sum((1, 2, 3), keepdim=True)
        if float(rr_new.max()) < 1e-10:
            break
        p = r + (rr_new / rr.clamp_min(1e-20)) * p
        rr = rr_new
    return (x * omega + bg * (1 - omega)).clamp(0, 1)


def blend(fg: torch.Tensor, bg: torch.Tensor, mask: torch.Tensor, mode: str,
          cfg: CompositesConfig):
    if mode == "hard":
        return fg * mask + bg * (1 - mask)
    if mode == "gaussian":
        soft = blur(mask, torch.full((len(mask),), float(cfg.feather))) if cfg.feather > 0 else mask
        return fg * soft + bg * (1 - soft)
    if mode == "poisson":
        return poisson_blend(fg, bg, mask, int(cfg.poisson_iters))
    raise ValueError(f"unknown blending mode {mode!r}; known: {', '.join(MODES)}")


def composite(fg_images: np.ndarray, fg_labels: np.ndarray, n: int, mode: str, seed: int,
              cfg: CompositesConfig | None = None, backgrounds: np.ndarray | None = None,
              rgba: bool = False, size: tuple[int, int] | None = None, chunk: int = 2048):
    """`n` composites of random cut-outs of `fg_images` on backgrounds: (uint8 [n,C,H,W], labels).

    `backgrounds` (uint8 [M,C,H,W]) are drawn at random; without them a plain canvas of `size`
    (default: the foreground's size) is used. `rgba`: the foreground's last channel is its mask.
    """
    cfg = cfg or CompositesConfig()
    if mode not in MODES:
        raise ValueError(f"unknown blending mode {mode!r}; known: {', '.join(MODES)}")
    if len(fg_images) == 0:
        raise ValueError("no foreground images to cut out")
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randint(len(fg_images), (n,), generator=gen).numpy()
    fg_channels = fg_images.shape[1] - (1 if rgba else 0)
    if backgrounds is not None:
        size = tuple(backgrounds.shape[-2:])
        channels = max(backgrounds.shape[1], fg_channels)
        bg_pick = torch.randint(len(backgrounds), (n,), generator=gen).numpy()
    else:
        size = tuple(size or fg_images.shape[-2:])
        channels = fg_channels
    out = []
    for i in range(0, n, chunk):
        idx = pick[i:i + chunk]
        fg, mask = (cutouts_from_rgba(fg_images[idx]) if rgba
                    else cutouts_from_images(fg_images[idx], cfg.threshold))
        fg, mask = place(fg, mask, size, gen, cfg)
        fg, mask = add_halo(fg, mask, int(cfg.halo), float(cfg.halo_value))
        if backgrounds is not None:
            bg = torch.as_tensor(backgrounds[bg_pick[i:i + chunk]]).float() / 255
        else:
            bg = plain_canvas(len(idx), channels, size, gen, cfg.canvas_min, cfg.canvas_max,
                              cfg.canvas_noise)
        fg = fg.expand(-1, channels, -1, -1) if fg.shape[1] == 1 else fg
        bg = bg.expand(-1, channels, -1, -1) if bg.shape[1] == 1 else bg
        out.append((blend(fg, bg, mask, mode, cfg) * 255).round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out).numpy(), np.asarray(fg_labels)[pick].astype(np.int64)
