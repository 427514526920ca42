"""Batched image augmentations on float tensors [N, C, H, W] in [0, 1]: elastic distortion, blur and
noise, each drawn per image from a seeded torch generator; and area coverage, which turns bilevel
ink drawn at a multiple of the output resolution into anti-aliased grey levels."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gaussian_kernels(sigmas: torch.Tensor, radius: int) -> torch.Tensor:
    """One normalised 1-D Gaussian per sigma, [N, 2 * radius + 1]; sigma 0 gives a delta."""
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=sigmas.device)
    k = torch.exp(-0.5 * (t[None] / sigmas.clamp_min(1e-3)[:, None]) ** 2)
    return k / k.sum(1, keepdim=True)


def blur(x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with a sigma per image."""
    n, c, h, w = x.shape
    radius = max(1, int(math.ceil(3 * float(sigmas.max()))))
    k = gaussian_kernels(sigmas, radius).repeat_interleave(c, 0)  # [N*C, K]
    y = x.reshape(1, n * c, h, w)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="replicate"), k[:, None, None, :],
                 groups=n * c)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="replicate"), k[:, None, :, None],
                 groups=n * c)
    return y.reshape(n, c, h, w)


def elastic(x: torch.Tensor, gen: torch.Generator, alpha: float, sigma: float,
            up: int = 1) -> torch.Tensor:
    """Simard et al.'s elastic distortion: a random displacement field (uniform in [-1, 1]),
    smoothed by a Gaussian of `sigma` pixels and scaled by a factor drawn per image uniformly in
    [0, `alpha`] pixels, so mild and strong distortions alike occur. With `up` > 1, `x` is an
    image at `up` times the output resolution: the field is drawn at the output's, in its pixels,
    and resampled to `x`'s, so the distortion is the same at any resolution."""
    if alpha <= 0:
        return x
    n, _, h, w = x.shape
    field = torch.rand(n, 2, h // up, w // up, generator=gen, device=x.device) * 2 - 1
    scale = alpha * torch.rand(n, 1, 1, 1, generator=gen, device=x.device)
    field = blur(field, torch.full((n,), sigma, device=x.device)) * scale
    if up > 1:
        field = F.interpolate(field, size=(h, w), mode="bilinear", align_corners=True) * up
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h, device=x.device),
                            torch.linspace(-1, 1, w, device=x.device), indexing="ij")
    grid = torch.stack([xs + field[:, 0] * 2 / (w - 1), ys + field[:, 1] * 2 / (h - 1)], -1)
    return F.grid_sample(x, grid, align_corners=True, padding_mode="zeros")


def coverage(ink: torch.Tensor, up: int, batch: int = 250) -> torch.Tensor:
    """Bilevel ink [N, 1, up*H, up*W] (1 is ink) to uint8 [N, 1, H, W] whose grey level is the
    share of each pixel the ink covers: edges anti-aliased by area, as MNIST's normalisation gave
    its bilevel NIST digits."""
    out = [(F.avg_pool2d(ink[i:i + batch].float(), up) * 255).round().to(torch.uint8)
           for i in range(0, len(ink), batch)]
    return torch.cat(out) if out else torch.zeros((0, 1, ink.shape[2] // up, ink.shape[3] // up),
                                                  dtype=torch.uint8)


def random_blur(x: torch.Tensor, gen: torch.Generator, max_sigma: float) -> torch.Tensor:
    if max_sigma <= 0:
        return x
    return blur(x, torch.rand(len(x), generator=gen, device=x.device) * max_sigma)


def random_noise(x: torch.Tensor, gen: torch.Generator, max_std: float) -> torch.Tensor:
    if max_std <= 0:
        return x
    std = torch.rand(len(x), 1, 1, 1, generator=gen, device=x.device) * max_std
    return (x + torch.randn(x.shape, generator=gen, device=x.device) * std).clamp(0, 1)


def augment_batch(images, seed: int, elastic_alpha: float = 0.0, elastic_sigma: float = 4.0,
                  blur_sigma: float = 0.0, noise_std: float = 0.0, chunk: int = 4096):
    """Apply elastic distortion, blur and noise to uint8 images [N, C, H, W]; uint8 back."""
    import numpy as np

    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, len(images), chunk):
        x = torch.as_tensor(np.ascontiguousarray(images[i:i + chunk])).float() / 255
        x = elastic(x, gen, elastic_alpha, elastic_sigma)
        x = random_blur(x, gen, blur_sigma)
        x = random_noise(x, gen, noise_std)
        out.append((x * 255).round().clamp(0, 255).to(torch.uint8).numpy())
    return np.concatenate(out) if out else images
