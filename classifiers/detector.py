"""Real-vs-synthetic detectors: a classifier two-sample test (C2ST) and a one-class Deep SVDD.

C2ST (Lopez-Paz & Oquab 2017): train a classifier to tell a real set from a synthetic one on half
of each, score the other halves. If the sets come from one distribution, test accuracy is 0.5 up
to binomial noise and the ROC AUC is 0.5; the further from 0.5, the larger the gap. Inputs are
pixels, the log-magnitude of the 2-D Fourier transform (where up-sampling and blending leave
periodic traces), or each image's pixel values sorted (`grey`: the distribution of its grey levels
alone, with no shape left to see). Deep SVDD (Ruff et al. 2018) is trained on real images only: it maps them close
to a centre c fixed from the initial features, with no bias terms (a bias lets the network map
everything to c); the distance to c scores how un-real an image looks, with no synthetic data seen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from synthgap.devices import Precision, default_precision


@dataclass
class GapConfig:
    """[gap]: the real/synthetic instruments of every source against the real holdout (the
    detectors' settings are `pipeline detect`'s defaults too)."""
    samples: int = 10000        # images a side; halves train, halves test
    steps: int = 400            # optimiser steps of each detector (C2ST views; Deep SVDD)
    batch_size: int = 128
    lr: float = 0.001
    width: int = 16
    max_side: int = 64          # larger images are resized down to this side
    seed: int = 0
    instruments: list[str] = field(default_factory=lambda: ["pixel", "fourier", "grey", "svdd"])
                                # the study's gap stages: C2ST on these inputs (KINDS) and Deep
                                # SVDD; the Fréchet distance always


def to_input(images: np.ndarray, kind: str, max_side: int = 64) -> torch.Tensor:
    """uint8 [N, C, H, W] -> float: pixels in [0, 1], or the centred log(1 + |FFT2|) per channel.
    Images with a side over max_side are resized down (area) so any size trains on a CPU."""
    x = shrink(torch.as_tensor(images).float() / 255, max_side)
    if kind == "pixel":
        return x
    if kind == "fourier":
        return torch.fft.fftshift(torch.log1p(torch.fft.fft2(x).abs()), dim=(-2, -1))
    if kind == "grey":  # each image's pixel values sorted: its grey-level distribution, no shape
        return x.flatten(2).sort(-1).values.reshape(x.shape)
    if kind == "spectrum1d":
        return spectrum1d(x)
    raise ValueError(f"unknown detector input {kind!r}; use one of {', '.join(KINDS)}")


KINDS = ("pixel", "fourier", "grey", "spectrum1d")


def shrink(x: torch.Tensor, max_side: int) -> torch.Tensor:
    """Float images [N, C, H, W] resized down (area) so the longer side is at most `max_side`."""
    if max(x.shape[-2:]) <= max_side:
        return x
    k = max_side / max(x.shape[-2:])
    return F.interpolate(x, size=(max(1, round(x.shape[-2] * k)), max(1, round(x.shape[-1] * k))),
                         mode="area")


def spectrum1d(x: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] in [0, 1] -> [N, R]: the azimuthal average of the log power spectrum (channels
    averaged), one value per integer radius up to min(H, W) // 2 (Durall et al. 2020): up-sampling
    leaves its trace at the high radii."""
    power = torch.log1p(torch.fft.fftshift(torch.fft.fft2(x), dim=(-2, -1)).abs() ** 2).mean(1)
    h, w = power.shape[-2:]
    yy, xx = torch.meshgrid(torch.arange(h) - h // 2, torch.arange(w) - w // 2, indexing="ij")
    radius = (yy ** 2 + xx ** 2).float().sqrt().round().long().flatten()
    keep = radius <= min(h, w) // 2
    r = radius[keep]
    sums = torch.zeros(len(x), int(r.max()) + 1).index_add_(1, r, power.flatten(1)[:, keep])
    return sums / torch.bincount(r).float()


def make_detector(channels: int, width: int, bias: bool = True) -> nn.Sequential:
    """Three conv blocks and global average pooling: one logit (or `width`·4 features), any size."""
    norm = (lambda c: nn.BatchNorm2d(c)) if bias else (lambda c: nn.BatchNorm2d(c, affine=False))
    layers = []
    for cin, cout in ((channels, width), (width, 2 * width), (2 * width, 4 * width)):
        layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), norm(cout), nn.LeakyReLU(0.1),
                   nn.MaxPool2d(2, ceil_mode=True)]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    if bias:
        layers.append(nn.Linear(4 * width, 1))
    return nn.Sequential(*layers)


ARCHS = ("small", "resnet18", "resnet50")


def make_net(x: torch.Tensor, arch: str, width: int) -> nn.Module:
    """The detector for inputs like `x`: a small MLP for vectors (spectrum1d), else `arch`: the
    small CNN or a torchvision ResNet (trained from scratch; first layer for the input's channels,
    one logit)."""
    if x.dim() == 2:
        return nn.Sequential(nn.Linear(x.shape[1], 4 * width), nn.ReLU(), nn.Linear(4 * width, 1))
    if arch == "small":
        return make_detector(x.shape[1], width)
    if arch not in ARCHS:
        raise ValueError(f"unknown detector arch {arch!r}; use one of {', '.join(ARCHS)}")
    import torchvision

    net = getattr(torchvision.models, arch)(weights=None, num_classes=1)
    if x.shape[1] != 3:
        net.conv1 = nn.Conv2d(x.shape[1], 64, 7, stride=2, padding=3, bias=False)
    return net


def start_from(net: nn.Module, path) -> int:
    """Load the tensors of a safetensors file (e.g. ImageNet weights converted once) whose names
    and shapes fit `net` (a new head or first layer keeps its initialisation); return how many."""
    from safetensors.torch import load_file

    own = net.state_dict()
    given = load_file(str(path))
    fit = {k: v for k, v in given.items() if k in own and own[k].shape == v.shape}
    if not fit:
        raise ValueError(f"{path}: no tensor fits the detector (names and shapes of a torchvision "
                         "ResNet state_dict are expected)")
    net.load_state_dict(fit, strict=False)
    return len(fit)


def fit_scores(x_train: torch.Tensor, y_train: torch.Tensor, evals: list[torch.Tensor],
               cfg: GapConfig, seed: int, device: torch.device, progress=None, arch: str = "small",
               init: str | None = None, precision: Precision | None = None):
    """Standardise on the training inputs, train a detector (BCE, real 0, synthetic 1; `arch`,
    from the weights file `init` if given; in `precision`) and score every tensor of `evals`;
    returns (net, [scores], (mean, std))."""
    mean, std = x_train.mean(0, keepdim=True), x_train.std(0, keepdim=True) + 1e-6
    x_train, *evals = [(t - mean) / std for t in (x_train, *evals)]
    torch.manual_seed(seed)
    net = make_net(x_train, arch, cfg.width)
    if init:
        start_from(net, init)
    net = train_net(net, lambda out, t: F.binary_cross_entropy_with_logits(out[:, 0], t),
                    x_train, y_train, cfg, seed, device, progress, precision=precision)
    return net, [scores_of(net, e, device)[:, 0] for e in evals], (mean, std)


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Average precision of the positives (label 1) ranked by score, ties broken pessimistically."""
    order = np.lexsort((-np.asarray(labels), -np.asarray(scores, np.float64)))
    hits = np.asarray(labels)[order] == 1
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].mean()) if hits.any() else float("nan")


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The score threshold (call above it synthetic) with the highest accuracy on these scores."""
    cands = np.unique(scores)
    # right of each candidate: real images at or below it are right, synthetic ones above it
    real_right = np.searchsorted(np.sort(scores[labels == 0]), cands, "right")
    syn = np.sort(scores[labels == 1])
    syn_right = len(syn) - np.searchsorted(syn, cands, "right")
    i = int(np.argmax(real_right + syn_right))
    return float((cands[i] + cands[min(i + 1, len(cands) - 1)]) / 2)


def auc_delong(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float, float]:
    """ROC AUC (positives = label 1, higher score = more positive) and its 95 % DeLong interval."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels)
    pos, neg = scores[labels == 1], scores[labels == 0]
    m, n = len(pos), len(neg)
    if m < 2 or n < 2:
        raise ValueError("AUC needs at least two samples of each class")
    # placement values: share of negatives below each positive (ties count half), and vice versa
    neg_sorted, pos_sorted = np.sort(neg), np.sort(pos)
    v10 = (np.searchsorted(neg_sorted, pos, "left") + np.searchsorted(neg_sorted, pos, "right")) / (2 * n)
    v01 = 1 - (np.searchsorted(pos_sorted, neg, "left") + np.searchsorted(pos_sorted, neg, "right")) / (2 * m)
    auc = float(v10.mean())
    se = math.sqrt(v10.var(ddof=1) / m + v01.var(ddof=1) / n)
    return auc, max(0.0, auc - 1.96 * se), min(1.0, auc + 1.96 * se)


def score_metrics(scores: np.ndarray, labels: np.ndarray, cut: float = 0.0) -> dict:
    """AUC with its DeLong interval, and the accuracy of calling a score above `cut` synthetic
    with its one-sided binomial p-value against 0.5."""
    auc, low, high = auc_delong(scores, labels)
    correct = int(((scores > cut) == (labels == 1)).sum())
    return {"auc": auc, "auc_ci_low": low, "auc_ci_high": high, "accuracy": correct / len(labels),
            "p_value": binomial_p(correct, len(labels)), "n_test": len(labels)}


def binomial_p(correct: int, n: int) -> float:
    """One-sided exact p-value of `correct` or more successes in n fair coin flips."""
    if correct <= 0:
        return 1.0
    k = np.arange(correct, n + 1)
    logs = (math.lgamma(n + 1) - np.array([math.lgamma(i + 1) + math.lgamma(n - i + 1) for i in k])
            - n * math.log(2))
    top = logs.max()
    return float(min(1.0, math.exp(top) * np.exp(logs - top).sum()))


def halves(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    idx = rng.permutation(n)
    return idx[: n // 2], idx[n // 2:]


RESIDENT = 2 << 30  # training inputs up to this many bytes move to the device once


def train_net(net, loss_fn, x: torch.Tensor, y: torch.Tensor | None, cfg: GapConfig, seed: int,
              device: torch.device, progress=None, batches=None,
              precision: Precision | None = None):
    """Train `net` for `cfg.steps` steps on batches drawn from `x` (and targets `y`), moved to
    the device once unless larger than RESIDENT bytes; the draw is on the CPU, so it is the same on
    every device. `batches`, an iterator of CPU (inputs, targets) batches, replaces the draw (the
    reference data path of `pipeline bench`). The forward pass runs in `precision` (default: the
    device's; synthgap/devices.py), the loss in float32; the net comes back contiguous, in eval
    mode."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    mode = precision or default_precision(device)
    mode.net(net.to(device)).train()
    cuda = device.type == "cuda"
    if batches is None and x.element_size() * x.nelement() <= RESIDENT:
        x, y = x.to(device), None if y is None else y.to(device)
    for step in range(cfg.steps):
        if batches is None:
            idx = torch.randint(len(x), (cfg.batch_size,), generator=gen)
            if x.device != idx.device:
                idx = (idx.pin_memory() if cuda else idx).to(x.device, non_blocking=True)
            xb, yb = x[idx].to(device), None if y is None else y[idx].to(device)
        else:
            xb, yb = (t.to(device, non_blocking=True) for t in next(batches))
        with mode.autocast(device):
            loss = loss_fn(net(mode.batch(xb)).float(), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if progress is not None and ((step + 1) % 50 == 0 or step + 1 == cfg.steps):
            progress(step + 1, cfg.steps)
    return mode.plain(net).eval()


@torch.no_grad()
def scores_of(net, x: torch.Tensor, device: torch.device) -> np.ndarray:
    return torch.cat([net(x[i:i + 2000].to(device)).cpu() for i in range(0, len(x), 2000)]).numpy()


def balanced(real: np.ndarray, synthetic: np.ndarray, rng: np.random.Generator):
    n = min(len(real), len(synthetic))
    if n < 8:
        raise ValueError(f"a detector needs at least 8 images a side, got {len(real)} real and "
                         f"{len(synthetic)} synthetic")
    return real[rng.permutation(len(real))[:n]], synthetic[rng.permutation(len(synthetic))[:n]]


def c2st(real: np.ndarray, synthetic: np.ndarray, kind: str = "pixel",
         cfg: GapConfig | None = None, seed: int = 0, device: torch.device = torch.device("cpu"),
         progress=None, precision: Precision | None = None) -> dict:
    """Classifier two-sample test on balanced sets; train on half of each (in `precision`), test
    on the rest."""
    cfg = cfg or GapConfig()
    rng = np.random.default_rng(seed)
    real, synthetic = balanced(real, synthetic, rng)
    n = len(real)
    (ra, rb), (sa, sb) = halves(n, rng), halves(n, rng)
    x = to_input(np.concatenate([real, synthetic]), kind, cfg.max_side)
    y = torch.cat([torch.zeros(n), torch.ones(n)])
    train_idx, test_idx = np.concatenate([ra, n + sa]), np.concatenate([rb, n + sb])
    _, (s,), _ = fit_scores(x[train_idx], y[train_idx], [x[test_idx]], cfg, seed, device, progress,
                            precision=precision)
    labels = y[test_idx].numpy()
    return {"instrument": f"c2st-{kind}", **score_metrics(s, labels)}


def deep_svdd(real_train: np.ndarray, real_test: np.ndarray, synthetic: np.ndarray,
              cfg: GapConfig | None = None, seed: int = 0,
              device: torch.device = torch.device("cpu"), progress=None,
              with_scores: bool = False, precision: Precision | None = None) -> dict:
    """One-class Deep SVDD trained on real images only (in `precision`); AUC of distance,
    real_test vs synthetic (and, `with_scores`, the distances of each side as "scores")."""
    cfg = cfg or GapConfig()
    rng = np.random.default_rng(seed)
    real_test, synthetic = balanced(real_test, synthetic, rng)
    x_train = to_input(real_train, "pixel", cfg.max_side)
    x_test = to_input(np.concatenate([real_test, synthetic]), "pixel", cfg.max_side)
    torch.manual_seed(seed)
    net = make_detector(x_train.shape[1], cfg.width, bias=False).to(device)
    net.train()  # batch statistics, as in training, for the initial centre
    with torch.no_grad():
        c = torch.cat([net(x_train[i:i + 1000].to(device)) for i in range(0, len(x_train), 1000)]).mean(0)
    c[(c.abs() < 0.01) & (c < 0)] = -0.01  # keep coordinates off zero, where a dead unit sits
    c[(c.abs() < 0.01) & (c >= 0)] = 0.01
    net = train_net(net, lambda out, _: ((out - c) ** 2).sum(1).mean(), x_train, None, cfg, seed,
                    device, progress, precision=precision)
    dist = ((torch.as_tensor(scores_of(net, x_test, device)) - c.cpu()) ** 2).sum(1).numpy()
    labels = np.r_[np.zeros(len(real_test)), np.ones(len(synthetic))]
    # balanced sets: call the farther half synthetic
    row = {"instrument": "svdd", **score_metrics(dist, labels, np.median(dist))}
    if with_scores:
        row["scores"] = (dist[:len(real_test)], dist[len(real_test):])
    return row
