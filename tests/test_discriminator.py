"""The refiner's discriminators on tiny sizes: their heads, their extra updates, LeCam, and the
accuracy they log."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from gan.losses import lecam
from gan.networks import discriminator, to_signed
from gan.train import train_refiner
from tiny import CPU, digits, tiny


def test_extra_discriminator_steps_move_only_the_discriminators():
    """With d_steps 2 the first generator step is the same, and the discriminators have had a
    second update on fresh images against pooled fakes."""
    cfg = tiny(steps=1, warp=False)
    real, syn = digits(16, 0, 2), digits(16, 1, 5)
    one, _ = train_refiner(real, syn, None, replace(cfg, d_steps=1), 0, CPU)
    two, history = train_refiner(real, syn, None, replace(cfg, d_steps=2), 0, CPU)
    for name in ("G", "F"):
        assert all(torch.equal(a, b) for a, b in zip(one[name].parameters(), two[name].parameters()))
    for name in ("D_real", "D_syn"):
        assert not all(torch.equal(a, b) for a, b in zip(one[name].parameters(), two[name].parameters()))
    assert np.isfinite(history[0]["D_real"])


def test_lecam_pulls_scores_towards_the_other_side_moving_average():
    """The first call starts each head's averages at the batch means; later calls use them, then
    move them by 1 - decay towards the new means. Heads a discriminator lacks are skipped."""
    real = (torch.tensor([[[[1.0]]], [[[0.8]]]]), torch.tensor([0.6, 1.0]), None)
    fake = (torch.tensor([[[[0.0]]], [[[0.2]]]]), torch.tensor([0.4, 0.0]), None)
    averages = {}
    first = lecam(real, fake, averages, decay=0.5)
    # patch head: averages 0.9 (real) and 0.1 (fake); image head: 0.8 and 0.2
    want = ((0.9 ** 2 + 0.7 ** 2) / 2 + (0.9 ** 2 + 0.7 ** 2) / 2
            + (0.4 ** 2 + 0.8 ** 2) / 2 + (0.4 ** 2 + 0.8 ** 2) / 2)
    assert float(first) == pytest.approx(want)
    assert len(averages) == 2 and [float(a) for a in averages[1]] == pytest.approx([0.8, 0.2])
    same = tuple(t if t is None else t.clone() for t in real)
    lecam(same, same, averages, decay=0.5)  # real = fake now: each average halfway to 0.9 / 0.8
    assert [float(a) for a in averages[0]] == pytest.approx([0.9, 0.5])
    assert [float(a) for a in averages[1]] == pytest.approx([0.8, 0.5])
    # a head missing between two present ones (patch and grey-level heads, no image head)
    gapped, averages = (real[0], None, real[1]), {}
    for _ in range(2):
        assert float(lecam(gapped, gapped, averages)) == pytest.approx(2 * 0.01 + 2 * 0.04)
    assert sorted(averages) == [0, 2]


def test_lecam_changes_only_the_discriminators_first_update():
    """lecam is a discriminator term: the generators' first step is the same with it, the
    discriminators' differs, and its value is logged."""
    cfg = tiny(steps=1, warp=False, d_steps=1)
    off, _ = train_refiner(digits(16, 0, 2), digits(16, 1, 5), None, cfg, 0, CPU)
    on, history = train_refiner(digits(16, 0, 2), digits(16, 1, 5), None, replace(cfg, lecam=1.0), 0,
                                CPU)
    for name in ("G", "F"):
        assert all(torch.equal(a, b) for a, b in zip(off[name].parameters(), on[name].parameters()))
    for name in ("D_real", "D_syn"):
        assert not all(torch.equal(a, b) for a, b in zip(off[name].parameters(), on[name].parameters()))
    assert history[0]["lecam"] > 0


def test_feature_head_trains_a_head_on_the_frozen_classifier():
    """With feature_head each discriminator scores the classifier's features: the classifier is
    not changed by training and is no parameter or state of the discriminators, and the gradient
    reaches the pixels through it. Without a classifier, one clear error."""
    from classifiers.digits import make_cnn
    real, syn = digits(16, 0, 2), digits(16, 1, 5)
    labels = np.arange(16) % 10
    torch.manual_seed(1)
    clf = make_cnn(4)
    before = [p.clone() for p in clf.parameters()]
    cfg = tiny(steps=2, feature_head=True, conditional=True)
    nets, history = train_refiner(real, syn, labels, cfg, 0, CPU, classifier=clf, real_labels=labels)
    assert all(torch.equal(a, b) for a, b in zip(before, clf.parameters()))
    D = nets["D_real"]
    assert not any(k.startswith("_features") for k in D.state_dict())
    assert sum(p.numel() for p in D.parameters()) < sum(p.numel() for p in clf.parameters())
    x = to_signed(torch.as_tensor(syn[:4])).requires_grad_(True)
    feature = D(x, torch.as_tensor(labels[:4]))[3]
    assert feature.shape == (4,)
    feature.sum().backward()
    assert x.grad.abs().sum() > 0  # G's gradient passes through the frozen features
    with pytest.raises(ValueError, match="feature_head needs the classifier"):
        train_refiner(real, syn, labels, cfg, 0, CPU, real_labels=labels)


def test_conditional_discriminator_depends_on_the_label():
    torch.manual_seed(0)
    D = discriminator(1, 8, classes=10, sn=True, image_head=True).eval()  # eval: SN power
    x = torch.rand(4, 1, 28, 28).repeat(2, 1, 1, 1)
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    patch, image, *_ = D(x, labels)
    assert not torch.allclose(image[:4], image[4:]) and not torch.allclose(patch[:4], patch[4:])
    patch2, image2, *_ = D(x, labels)  # iteration frozen, so the same label gives the same score
    assert torch.allclose(image, image2)


def test_grey_head_sees_grey_levels_not_places():
    """The grey-level head scores each image's sorted pixel values: moving pixels about leaves its
    score, changing a grey level changes it, and its gradient reaches the pixels; with labels, the
    score depends on the label."""
    torch.manual_seed(0)
    D = discriminator(1, 8, classes=10, sn=True, grey_head=True).eval()
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    labels = torch.tensor([3, 3, 3, 3])
    shuffled = x.flatten(1)[:, torch.randperm(784)].view_as(x)
    grey = D(x, labels)[2]
    assert torch.allclose(D(shuffled, labels)[2], grey, atol=1e-6)
    assert not torch.allclose(D(x.clamp(-0.5, 0.5), labels)[2], grey)
    assert not torch.allclose(D(x, labels + 1)[2], grey)
    x.requires_grad_(True)
    D(x, labels)[2].sum().backward()
    assert (x.grad != 0).float().mean() > 0.9


def test_the_discriminator_accuracy_is_logged_on_held_out_images():
    real, syn = digits(40, 0, 2), digits(40, 1, 6)
    labels = np.arange(40) % 10
    cfg = tiny(steps=30, log_every=10, conditional=True, holdout=8, warp=True)
    _, history = train_refiner(real, syn, labels, cfg, 0, CPU, real_labels=labels)
    acc = [h["d_accuracy"] for h in history]
    assert len(acc) == 3 and all(0 <= a <= 1 for a in acc)
    # bars of 2 and of 6 pixels are easy to tell apart: the discriminator learns it
    assert acc[-1] > 0.6, acc
    assert all("field_px" in h and h["field_px"] >= 0 for h in history)
    with pytest.raises(ValueError, match="conditional discriminator needs labelled"):
        train_refiner(real, syn, labels, tiny(steps=1, conditional=True), 0, CPU)


def test_accuracy_outside_the_budget_is_logged_and_leaves_training_alone():
    real, syn, val = digits(40, 0, 2), digits(40, 1, 6), digits(50, 2, 2)
    labels = np.arange(50) % 10
    cfg = tiny(steps=20, log_every=10, conditional=True, holdout=8, sn=True, warp=True)
    args = (real, syn, labels[:40], cfg, 0, CPU)
    nets, history = train_refiner(*args, real_labels=labels[:40], val=(val, labels))
    plain_nets, plain = train_refiner(*args, real_labels=labels[:40])
    acc = [h["d_accuracy_val"] for h in history]
    assert len(acc) == 2 and all(0 <= a <= 1 for a in acc)
    assert acc[-1] > 0.6, acc  # bars of 2 and 6 pixels: told apart on new images too
    for h, p in zip(history, plain):
        assert {k: v for k, v in h.items() if k != "d_accuracy_val"} == p
    for name in nets:
        for (k, a), b in zip(nets[name].state_dict().items(), plain_nets[name].state_dict().values()):
            assert torch.equal(a, b), (name, k)


def _params(net):
    return {k: p.detach().clone() for k, p in net.named_parameters()}


def test_the_shape_discriminator_teaches_the_warp_alone():
    """One step with and without `shape_d`: the appearance step and F take the same update (the
    shape view of the warped render does not depend on them), the warp another; its held-out
    accuracy is logged; without a warp it is refused."""
    real, syn, val = digits(40, 0, 2), digits(40, 1, 6), digits(50, 2, 2)
    labels = np.arange(50) % 10
    cfg = tiny(steps=1, warp=True, conditional=True, holdout=8)
    runs = [train_refiner(real, syn, labels[:40], replace(cfg, shape_d=on), 0, CPU,
                          real_labels=labels[:40], val=(val, labels)) for on in (False, True)]
    (plain, _), (shaped, history) = runs
    assert "D_shape" in shaped and "D_shape" not in plain
    a, b = _params(plain["G"].appearance), _params(shaped["G"].appearance)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(a, b) for a, b in zip(plain["F"].parameters(), shaped["F"].parameters()))
    assert not torch.equal(plain["G"].warp[-1].weight, shaped["G"].warp[-1].weight)
    assert {"gan_shape", "D_shape"} <= set(history[0]) and 0 <= history[0]["d_shape_accuracy_val"] <= 1
    with pytest.raises(ValueError, match="refiner.shape_d needs refiner.warp = true"):
        train_refiner(real, syn, None, tiny(steps=1, shape_d=True), 0, CPU)


def test_the_warp_learns_at_its_own_rate():
    """`lr_warp` changes the warp's first update and nothing else's (the fresh warp is the
    identity, so the appearance step sees the same images)."""
    real, syn = digits(16, 0, 2), digits(16, 1, 5)
    cfg = tiny(steps=1, warp=True)
    base, _ = train_refiner(real, syn, None, cfg, 0, CPU)
    fast, _ = train_refiner(real, syn, None, replace(cfg, lr_warp=10 * cfg.lr), 0, CPU)
    a, b = _params(base["G"]), _params(fast["G"])
    moved = {k for k in a if not torch.equal(a[k], b[k])}
    assert moved and all(k.startswith("warp") for k in moved), moved
    # the faster warp has moved its field further
    x = to_signed(torch.as_tensor(syn[:8]))
    assert fast["G"].field(x).abs().mean() > base["G"].field(x).abs().mean()
