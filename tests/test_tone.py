"""The tone baseline and per-image level matching (renderers/tone.py) on tiny arrays."""

import numpy as np
import torch

from renderers.tone import apply_tone_curve, exemplars_for, fit_tone_curve, match_levels, match_to_real


def test_tone_curve_is_monotone_and_maps_the_real_images_onto_themselves():
    rng = np.random.default_rng(0)
    real = (rng.beta(0.3, 0.6, (40, 1, 28, 28)) * 255).astype(np.uint8)
    curve = fit_tone_curve(real, real)
    used = np.unique(real)
    assert np.array_equal(curve[used], used)
    assert np.array_equal(apply_tone_curve(real, curve), real)
    renders = (rng.random((40, 1, 28, 28)) ** 3 * 255).astype(np.uint8)
    curve = fit_tone_curve(renders, real)
    assert np.all(np.diff(curve.astype(int)) >= 0)
    toned = apply_tone_curve(renders, curve)
    # the toned renders' grey-level quantiles are the real images' (within a level or two)
    q = np.linspace(0.05, 0.95, 19)
    assert np.abs(np.quantile(toned, q) - np.quantile(real, q)).max() <= 3


def test_match_levels_gives_each_image_its_exemplars_levels_and_keeps_its_shape():
    rng = np.random.default_rng(0)
    real = (rng.beta(0.3, 0.6, (30, 1, 28, 28)) * 255).astype(np.uint8)
    real[real < 40] = 0
    as_float = torch.as_tensor(real).float()
    assert torch.equal(match_levels(as_float, as_float), as_float)  # matched to itself: unchanged
    renders = (rng.random((30, 1, 28, 28)) ** 3 * 255).astype(np.uint8)
    renders[:, :, :4] = 0
    out = match_levels(torch.as_tensor(renders).float(), as_float).numpy().astype(np.uint8)
    for r, o, e in zip(renders.reshape(30, -1), out.reshape(30, -1), real.reshape(30, -1)):
        assert np.array_equal(o > 0, r > 0)  # the same pixels inked, black left black
        by_level = o[np.argsort(r, kind="stable")].astype(int)
        assert np.all(np.diff(by_level) >= 0)  # a brighter pixel is never made darker
        assert set(np.unique(o[o > 0])) <= set(np.unique(e[e > 0]))  # the exemplar's levels
        assert abs(np.median(o[o > 0]) - np.median(e[e > 0])) <= 1 + np.ptp(e[e > 0]) * 0.05
    blank = torch.zeros(1, 1, 28, 28)
    assert torch.equal(match_levels(torch.as_tensor(renders[:1]).float(), blank),
                       torch.as_tensor(renders[:1]).float())  # no ink to copy: left alone
    labels, real_labels = np.arange(20) % 3, np.array([0, 1, 0, 1, 5])
    picks = exemplars_for(labels, real_labels, 0)
    assert np.all(real_labels[picks[labels < 2]] == labels[labels < 2])  # an image of its digit
    assert np.array_equal(picks, exemplars_for(labels, real_labels, 0))
    toned = match_to_real(renders[:20], labels, real[:5], real_labels, 0)
    assert toned.dtype == np.uint8 and np.array_equal(toned > 0, renders[:20] > 0)
    assert np.array_equal(match_to_real(renders[:20], labels, real[:5], real_labels, 0, chunk=7),
                          toned)  # in chunks or at once, the same images


def test_exemplars_of_like_ink_come_from_the_nearest_share_of_the_digit():
    real_labels = np.repeat([0, 1], 100)
    real_ink = np.r_[np.arange(100) * 3, np.arange(100) * 3][np.random.default_rng(1).permutation(200)]
    real_labels = real_labels[np.random.default_rng(1).permutation(200)]
    labels, ink = np.arange(400) % 2, np.random.default_rng(2).integers(15, 285, 400)
    picks = exemplars_for(labels, real_labels, 0, ink, real_ink, 0.1)
    assert np.all(real_labels[picks] == labels)
    # ten images of the digit in ink order, centred on the image's ink: within 6 steps of 3 pixels
    assert np.abs(real_ink[picks] - ink).max() <= 18
    assert len(np.unique(picks)) > 100  # still a draw, not one image per ink
    # never fewer than ten exemplars a digit (FEWEST_EXEMPLARS), all of them where it has fewer
    assert np.array_equal(exemplars_for(labels, real_labels, 0, ink, real_ink, 0.001), picks)
    few = exemplars_for(labels, real_labels[:12], 0, ink, real_ink[:12], 0.1)
    assert np.array_equal(few, exemplars_for(labels, real_labels[:12], 0))
    anywhere = exemplars_for(labels, real_labels, 0, ink, real_ink, 1.0)
    assert np.array_equal(anywhere, exemplars_for(labels, real_labels, 0))  # 1: ink plays no part
    assert np.abs(real_ink[anywhere] - ink).mean() > 50
