"""The refiner's loss terms: LSGAN over a discriminator's heads, R1, and the warp's smoothness."""

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


def smoothness(field: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of neighbouring displacements, in pixels²."""
    return ((field[..., 1:, :] - field[..., :-1, :]).pow(2).mean()
            + (field[..., :, 1:] - field[..., :, :-1]).pow(2).mean())
