"""The refiner's loss terms: LSGAN over a discriminator's heads, R1, LeCam and the warp's
smoothness."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def lsgan(scores: torch.Tensor, target: float) -> torch.Tensor:
    return F.mse_loss(scores, torch.full_like(scores, target))


def per_image(scores: tuple) -> list[torch.Tensor]:
    """The discriminator's heads that it has, each as one score per image (patches averaged)."""
    patch, *rest = scores
    return [patch.flatten(1).mean(1), *(s for s in rest if s is not None)]


def adversarial(scores: tuple, target: float) -> torch.Tensor:
    """LSGAN loss summed over the discriminator's heads (patch, image and grey levels when it has
    them), the patch head over every patch."""
    patch, *rest = scores
    return sum((lsgan(s, target) for s in rest if s is not None), lsgan(patch, target))


def realness(scores: tuple) -> torch.Tensor:
    """One score per image: the mean of its heads' mean outputs (above 0.5: called real)."""
    heads = per_image(scores)
    return sum(heads) / len(heads)


def r1_penalty(D: nn.Module, x: torch.Tensor, labels) -> torch.Tensor:
    """Mesheder et al.'s R1: the squared gradient norm of D's scores at real inputs."""
    x = x.detach().requires_grad_(True)
    total = sum(s.sum() for s in per_image(D(x, labels)))
    (grad,) = torch.autograd.grad(total, x, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


def lecam(real_scores: tuple, fake_scores: tuple, averages: dict, decay: float = 0.99
          ) -> torch.Tensor:
    """Tseng et al.'s LeCam regulariser (2021), for discriminators with few real images: each head's
    scores on real images pulled towards the moving average of its scores on fakes, and its scores
    on fakes towards that on real images, |D(y) - a_fake|² + |D(G(x)) - a_real|². `averages` maps
    each head's place in the scores to its (a_real, a_fake), updated here (empty on the first call:
    they start at the first batch's means)."""
    total = 0.0
    for h, (r, f) in enumerate(zip(real_scores, fake_scores)):
        if r is None:
            continue
        r, f = r.float(), f.float()
        means = r.mean().detach(), f.mean().detach()
        a_real, a_fake = averages.setdefault(h, means)
        total = total + (r - a_fake).pow(2).mean() + (f - a_real).pow(2).mean()
        averages[h] = (decay * a_real + (1 - decay) * means[0],
                       decay * a_fake + (1 - decay) * means[1])
    return total


def smoothness(field: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of neighbouring displacements, in pixels²."""
    return ((field[..., 1:, :] - field[..., :-1, :]).pow(2).mean()
            + (field[..., :, 1:] - field[..., :, :-1]).pow(2).mean())
