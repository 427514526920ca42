"""How 28×28 digit images measure: the box around their ink, and its spread and slant (the
render-size tests and benchmarks/render_geometry.py compare renders with MNIST by these)."""

from __future__ import annotations

import numpy as np


def ink_moments(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per 28×28 image: the ink's spread across and down (root second moments about its centre of
    mass, pixels) and its slant (the shear that would make it upright, positive when the top leans
    right)."""
    w = np.asarray(images, float).reshape(len(images), 28, 28)
    y, x = np.mgrid[:28, :28]
    m = w.sum((1, 2))
    dy = y - ((w * y).sum((1, 2)) / m)[:, None, None]
    dx = x - ((w * x).sum((1, 2)) / m)[:, None, None]
    mu02, mu11 = (w * dy * dy).sum((1, 2)), (w * dx * dy).sum((1, 2))
    return np.sqrt((w * dx * dx).sum((1, 2)) / m), np.sqrt(mu02 / m), -mu11 / mu02


def ink_box(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per 28×28 image: the height and width of the box around its ink (pixels above 100), and how
    many of those pixels lie within 3 pixels of the border."""
    ink = np.asarray(images).reshape(len(images), 28, 28) > 100
    rows, cols = ink.any(2), ink.any(1)
    rim = ink.copy()
    rim[:, 3:25, 3:25] = False
    return (28 - rows.argmax(1) - rows[:, ::-1].argmax(1),
            28 - cols.argmax(1) - cols[:, ::-1].argmax(1), rim.sum((1, 2)))
