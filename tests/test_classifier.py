"""The digit classifier: cells trained as one grouped model against cells trained alone."""

import numpy as np
import pytest
import torch

from classifiers.digits import (CellGroup, ClassifierConfig, error_rate, make_cnn, train_classifier,
                                train_classifiers)

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits():
    from synthgap.data.mnist import load_mnist
    d = load_mnist()
    return (d["train_images"][:1200, None], d["train_labels"][:1200],
            d["test_images"][:1000, None], d["test_labels"][:1000])


def test_a_group_holds_each_cells_weights_and_gives_them_back():
    cells = []
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        cells.append(make_cnn(4))
    for cell, back in zip(cells, CellGroup(cells).split(4, 1)):
        mine, theirs = cell.state_dict(), back.state_dict()
        assert mine.keys() == theirs.keys()
        assert all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_the_group_computes_what_each_cell_computes_alone():
    cells = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        cells.append(make_cnn(4).eval())
    group = CellGroup(cells).eval()
    x = torch.rand(5, 2, 28, 28)
    ones = (torch.ones(5, 2, 4 * 2 * 49), torch.ones(5, 2, 128))  # no dropout
    out = group(x, ones)
    for g, cell in enumerate(cells):
        torch.testing.assert_close(out[:, g], cell(x[:, g:g + 1]), atol=1e-5, rtol=1e-4)


def test_a_cell_trained_in_a_group_agrees_with_the_cell_trained_alone(digits):
    images, labels, test_images, test_labels = digits
    few = (images[:60], labels[:60])
    cells = [([(images, labels, 1.0)], 0),
             ([(*few, 0.5), (images[600:], labels[600:], 0.5)], 1),
             ([(*few, 1.0)], 2)]
    cfg = ClassifierConfig(steps=60, batch_size=32, width=4)
    together = train_classifiers(cells, cfg, CPU)
    errors = []
    for (sources, seed), grouped in zip(cells, together):
        alone = train_classifier(sources, cfg, seed, CPU)
        e_alone = error_rate(alone, test_images, test_labels, CPU)
        e_group = error_rate(grouped, test_images, test_labels, CPU)
        assert abs(e_alone - e_group) <= 1e-4, (seed, e_alone, e_group)
        errors.append(e_alone)
        for k, v in alone.state_dict().items():
            torch.testing.assert_close(grouped.state_dict()[k], v, atol=1e-3, rtol=1e-3)
    assert errors[0] < 0.5 and len(set(errors)) == 3  # they learned, and each its own thing


def test_cells_of_a_group_must_share_their_channels(digits):
    images, labels, _, _ = digits
    rgb = np.repeat(images[:60], 3, axis=1)
    with pytest.raises(ValueError, match="channel"):
        train_classifiers([([(images, labels, 1.0)], 0), ([(rgb, labels[:60], 1.0)], 1)],
                          ClassifierConfig(steps=1, width=4), CPU)
