"""Tiny data and settings shared by the refiner's tests."""

import numpy as np
import torch

from gan.config import RefinerConfig

TINY = {"batch_size": 8, "width": 4, "blocks": 1, "d_width": 8, "sem_steps": 5, "log_every": 1,
        "conditional": False, "holdout": 4}
CPU = torch.device("cpu")


def tiny(**knobs) -> RefinerConfig:
    """The refiner at TINY sizes, with `knobs` over them."""
    return RefinerConfig(**{**TINY, **knobs})


def digits(n, seed, thick):
    """Crude 'digits': a bright bar of a seed-dependent thickness on black, uint8 [n, 1, 28, 28]."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 1, 28, 28), np.uint8)
    for i in range(n):
        r = rng.integers(6, 18)
        x[i, 0, r:r + thick, 6:22] = 255
    return x
