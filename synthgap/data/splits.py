"""Seeded, class-stratified splits of MNIST: pool / holdout, and nested budgets from the pool.

Both come from one stratified ordering: each class is shuffled, its k-th image gets the position
(k + u_c) / n_c with a random offset u_c per class, and all images are sorted by position. Every prefix
of the ordering then holds each class within one image of its share, so prefixes are stratified splits
and prefixes of growing length are nested. MNIST's file order carries writer structure, so no split is
ever a contiguous block of the files.
"""

from __future__ import annotations

import numpy as np


def stratified_order(labels: np.ndarray, seed: int) -> np.ndarray:
    """A permutation of range(len(labels)) whose every prefix is class-stratified."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    position = np.empty(len(labels), dtype=np.float64)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        members = members[rng.permutation(len(members))]
        position[members] = (np.arange(len(members)) + rng.random()) / len(members)
    tiebreak = rng.random(len(labels))
    return np.lexsort((tiebreak, position))


def pool_holdout(labels: np.ndarray, holdout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (pool, holdout) of a stratified random split with `holdout` images held out."""
    if not 0 < holdout < len(labels):
        raise ValueError(f"holdout must be between 1 and {len(labels) - 1}, got {holdout}")
    order = stratified_order(labels, seed)
    return np.sort(order[holdout:]), np.sort(order[:holdout])


def nested_budget(labels: np.ndarray, budget: int, seed: int) -> np.ndarray:
    """Indices of `budget` stratified images; for one seed, smaller budgets are subsets of larger."""
    if not 0 < budget <= len(labels):
        raise ValueError(f"budget must be between 1 and {len(labels)}, got {budget}")
    return stratified_order(labels, seed)[:budget]
