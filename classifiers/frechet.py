"""Fréchet distance between two image sets in a trained digit classifier's penultimate features
(FID's formula, Heusel et al. 2017, with the oracle CNN in place of Inception):
|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from classifiers.digits import to_float


@torch.no_grad()
def features(model: nn.Sequential, images: np.ndarray, device: torch.device,
             batch: int = 2000) -> np.ndarray:
    """Activations entering the classifier's last layer (its penultimate features), float64."""
    body = model[:-1].to(device).eval()
    out = [body(to_float(torch.as_tensor(images[i:i + batch], device=device))).double().cpu()
           for i in range(0, len(images), batch)]
    return torch.cat(out).numpy()


def sqrtm_psd(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance of Gaussians fitted to feature rows a [N, D] and b [M, D]."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError("the Fréchet distance needs at least two samples a side")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_a = sqrtm_psd(s_a)
    # Tr((S_a S_b)^(1/2)) = Tr((S_a^(1/2) S_b S_a^(1/2))^(1/2)), a symmetric PSD matrix
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ s_b @ root_a), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * cross)
