"""A trained refiner applied: G over uint8 renders, in batches, with `variants` noise draws each."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from gan.networks import to_signed, to_uint8
from synthgap.devices import Precision


@torch.no_grad()
def refine(G: nn.Module, images: np.ndarray, device: torch.device, batch: int = 1000,
           progress=None, variants: int = 1, seed: int = 0,
           channels_last: bool = False) -> np.ndarray:
    """G applied to uint8 images [N, C, H, W] in float32 (its output is training data: bf16 would
    move grey levels), channels-last if asked (G is left contiguous); uint8 out,
    [variants · N, C, H, W], variant-major (all images' first variant, then all second variants,
    ...). Each variant draws its own noise map for the warp, from `seed`: the same call gives the
    same images."""
    warp = getattr(G, "warp", None) is not None
    if variants > 1 and not warp:
        raise ValueError("variants > 1 need a refiner with a warp (warp = true): without one, "
                         "G has no noise input and every variant is the same image")
    mode = Precision(channels_last=channels_last)
    G = mode.net(G.to(device)).eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    n = len(images)
    out = np.empty((variants * n, *images.shape[1:]), np.uint8)
    for v in range(variants):
        # one draw of noise per variant, whatever the batch size
        z = G.noise_like(torch.empty(n, *images.shape[1:], device=device), gen) if warp else None
        for i in range(0, n, batch):
            x = torch.as_tensor(images[i:i + batch], device=device)
            x = to_signed(G.tone[x.long()] if hasattr(G, "tone") else x)
            zi = z[i:i + batch] if warp else None
            out[v * n + i:v * n + i + len(x)] = to_uint8(G(x, zi)).cpu().numpy()
            progress and progress(v * n + min(i + batch, n), variants * n)
    mode.plain(G)
    return out
