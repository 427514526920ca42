"""The downstream digit classifier: a small CNN trained for a fixed number of steps on a mixture.

A mixture is a list of sources (uint8 images [N, 1, 28, 28], labels) with the fraction of each batch
drawn from each, so 55 real images are not drowned by 55,000 synthetic ones. Every source gets the
same light augmentation (a random shift, rotation and scale). Data live on the device; no DataLoader.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from synthgap.devices import Precision, default_precision


@dataclass
class ClassifierConfig:
    """[classifier]: the cells' classifier (every cell the same, so cells compare)."""
    steps: int = 1000           # optimiser steps (AdamW, one-cycle schedule)
    batch_size: int = 128
    lr: float = 0.003           # peak of the one-cycle schedule
    weight_decay: float = 0.0005
    width: int = 16             # channels of the first conv block (the second has twice as many)
    shift: float = 2.0          # light augmentation for every mixture alike: shift in pixels,
    rotate: float = 10.0        # rotation in degrees,
    scale: float = 0.1          # and relative scale
    group: int = 1              # cells of one budget trained at once as one grouped model (the
                                # runner's unit of work; 1: one by one). Faster on a GPU and on a
                                # CPU; a cell's result differs from alone by float noise only


# The classifiers of the regimes study (experiment.classifiers): [classifier] keys over [classifier]
CLASSIFIERS = {"plain": {"shift": 0.0, "rotate": 0.0, "scale": 0.0}, "augmented": {}}


def make_cnn(width: int = 16, classes: int = 10, channels: int = 1) -> nn.Sequential:
    """Two conv-BN-ReLU-pool blocks and a two-layer head; ~100k parameters at width 16."""
    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                nn.MaxPool2d(2)]
    return nn.Sequential(*block(channels, width), *block(width, 2 * width), nn.Flatten(),
                         nn.Dropout(0.25), nn.Linear(2 * width * 49, 128), nn.ReLU(),
                         nn.Dropout(0.5), nn.Linear(128, classes))


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, C, H, W] -> float in [0, 1]."""
    return images.float().div_(255.0)


def augment(x: torch.Tensor, gen: torch.Generator, shift: float, rotate: float,
            scale: float) -> torch.Tensor:
    """Random affine per image: shift in pixels, rotation in degrees, relative scale."""
    n, _, h, w = x.shape
    if not (shift or rotate or scale):
        return x

    def uniform(limit):
        return (torch.rand(n, generator=gen, device=x.device) * 2 - 1) * limit

    angle = uniform(math.radians(rotate))
    s = 1 + uniform(scale)
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    theta = torch.stack([torch.stack([cos, -sin, uniform(2 * shift / w)], 1),
                         torch.stack([sin, cos, uniform(2 * shift / h)], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def batch_counts(batch_size: int, fractions: list[float]) -> list[int]:
    """Split a batch among sources by fraction; every source with a positive fraction gets ≥ 1."""
    total = sum(fractions)
    counts = [max(1, round(batch_size * f / total)) if f > 0 else 0 for f in fractions]
    counts[int(np.argmax(counts))] += batch_size - sum(counts)
    return counts


def draw_batch(sources: list[tuple[torch.Tensor, torch.Tensor]], counts: list[int],
               gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One training batch of a cell: counts[i] images and their labels drawn uniformly, with
    replacement, from source i, the sources one after the other."""
    picked = []
    for (x, y), k in zip(sources, counts):
        if k:
            idx = torch.randint(len(x), (k,), generator=gen, device=x.device)
            picked.append((x[idx], y[idx]))
    return torch.cat([p[0] for p in picked]), torch.cat([p[1] for p in picked])


class CellGroup(nn.Module):
    """G copies of `make_cnn`, each with its own weights, as one model: grouped convolutions,
    per-channel batch norm (so each cell's statistics are its own) and batched linear layers. It
    reads [B, G·C, H, W] (cell g's batch in channels g·C..) and gives logits [B, G, classes]; the
    dropout masks [B, G, features] are given, so each cell draws its own."""

    def __init__(self, cells: list[nn.Sequential]):
        super().__init__()
        g, (conv1, bn1, conv2, bn2) = len(cells), (cells[0][i] for i in (0, 1, 4, 5))
        self.cells = g
        self.conv1 = nn.Conv2d(g * conv1.in_channels, g * conv1.out_channels, 3, padding=1,
                               groups=g, bias=False)
        self.conv2 = nn.Conv2d(g * conv2.in_channels, g * conv2.out_channels, 3, padding=1,
                               groups=g, bias=False)
        self.bn1, self.bn2 = nn.BatchNorm2d(g * bn1.num_features), nn.BatchNorm2d(g * bn2.num_features)
        self.w1 = nn.Parameter(torch.stack([c[10].weight.detach() for c in cells]))
        self.b1 = nn.Parameter(torch.stack([c[10].bias.detach() for c in cells]))
        self.w2 = nn.Parameter(torch.stack([c[13].weight.detach() for c in cells]))
        self.b2 = nn.Parameter(torch.stack([c[13].bias.detach() for c in cells]))
        with torch.no_grad():
            for index, name, mine in self._tensors():
                mine.copy_(torch.cat([c[index].state_dict()[name] for c in cells]))

    def _tensors(self):
        """(make_cnn layer index, tensor name, grouped tensor) of the convolutions and batch norms,
        whose tensors are the cells' concatenated along the first axis."""
        for index, layer in ((0, self.conv1), (1, self.bn1), (4, self.conv2), (5, self.bn2)):
            for name, t in layer.state_dict(keep_vars=True).items():
                if name != "num_batches_tracked":
                    yield index, name, t

    def forward(self, x: torch.Tensor, masks: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        h = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        h = F.max_pool2d(F.relu(self.bn2(self.conv2(h))), 2)
        h = h.flatten(1).unflatten(1, (self.cells, -1)) * masks[0]
        h = F.relu(torch.einsum("bgi,goi->bgo", h, self.w1) + self.b1) * masks[1]
        return torch.einsum("bgi,goi->bgo", h, self.w2) + self.b2

    def split(self, width: int, channels: int) -> list[nn.Sequential]:
        """Each cell's weights (and batch-norm statistics) as a plain `make_cnn`, in eval mode."""
        out = []
        for g in range(self.cells):
            cell = make_cnn(width, self.w2.shape[1], channels)
            state = cell.state_dict()
            for index, name, mine in self._tensors():
                n = len(mine) // self.cells
                state[f"{index}.{name}"] = mine.detach()[g * n:(g + 1) * n]
            for index, bn in ((1, self.bn1), (5, self.bn2)):
                state[f"{index}.num_batches_tracked"] = bn.num_batches_tracked.detach()
            for index, w, b in ((10, self.w1, self.b1), (13, self.w2, self.b2)):
                state[f"{index}.weight"], state[f"{index}.bias"] = w.detach()[g], b.detach()[g]
            cell.load_state_dict({k: v.cpu() for k, v in state.items()})
            out.append(cell.eval())
        return out


def dropout_mask(shape: tuple, p: float, gen: torch.Generator, device) -> torch.Tensor:
    return (torch.rand(shape, generator=gen, device=device) >= p).float().div_(1 - p)


def train_classifier(sources: list[tuple[np.ndarray, np.ndarray, float]], cfg: ClassifierConfig,
                     seed: int, device: torch.device, progress=None,
                     precision: Precision | None = None) -> nn.Module:
    """Train a fresh CNN on `sources` = [(images uint8 [N,C,H,W], labels, batch fraction), ...]."""
    return train_classifiers([(sources, seed)], cfg, device, progress, precision)[0]


def train_classifiers(cells: list[tuple[list, int]], cfg: ClassifierConfig, device: torch.device,
                      progress=None, precision: Precision | None = None) -> list[nn.Module]:
    """Train one fresh CNN per cell (sources, seed), all cells at once as one `CellGroup`, in
    `precision` (default: the device's, synthgap/devices.py); the models come back float32 and
    contiguous, as if trained alone in float32.

    Each cell keeps what it would have alone: its initial weights (drawn after
    `torch.manual_seed(seed)`), its own generator for batches, augmentation and dropout masks, its
    own batch-norm statistics and, since Adam works element by element on disjoint weights, its
    own optimiser state. The loss is the sum of the cells' losses, so each cell's gradient is its
    own. A cell's result does not depend on its group beyond floating-point noise.
    """
    channels = cells[0][0][0][0].shape[1]
    if any(x.shape[1] != channels for sources, _ in cells for x, _, _ in sources):
        raise ValueError("the cells of a group must share their images' channel count")
    on_device: dict[tuple, torch.Tensor] = {}  # one device copy of the data cells share

    def put(a: np.ndarray) -> torch.Tensor:
        where = (a.__array_interface__["data"][0], a.shape, a.strides, a.dtype.str)
        if where not in on_device:
            on_device[where] = torch.as_tensor(a, device=device)
        return on_device[where]

    inits, gens, data, counts = [], [], [], []
    for sources, seed in cells:
        torch.manual_seed(seed)
        inits.append(make_cnn(cfg.width, channels=channels))
        gens.append(torch.Generator(device=device).manual_seed(seed))
        data.append([(put(x), put(y)) for x, y, _ in sources])
        counts.append(batch_counts(cfg.batch_size, [f for _, _, f in sources]))
    mode = precision or default_precision(device)
    model = mode.net(CellGroup(inits).to(device)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps)
    b, features = cfg.batch_size, (model.w1.shape[2], model.w1.shape[1])
    for step in range(cfg.steps):
        xs, ys, masks = [], [], ([], [])
        for gen, sources, ks in zip(gens, data, counts):
            images, labels = draw_batch(sources, ks, gen)
            xs.append(augment(to_float(images), gen, cfg.shift, cfg.rotate, cfg.scale))
            ys.append(labels)
            for mask, (p, n) in zip(masks, ((0.25, features[0]), (0.5, features[1]))):
                mask.append(dropout_mask((b, n), p, gen, device))
        x = mode.batch(torch.cat(xs, 1))  # [B, G·C, H, W]
        with mode.autocast(device):
            logits = model(x, tuple(torch.stack(m, 1) for m in masks))
            loss = F.cross_entropy(logits.flatten(0, 1).float(), torch.stack(ys, 1).flatten(),
                                   reduction="sum") / b
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if progress is not None and ((step + 1) % 25 == 0 or step + 1 == cfg.steps):
            progress(step + 1, cfg.steps)
    return model.split(cfg.width, channels)


@torch.no_grad()
def predict(model: nn.Module, images: np.ndarray, device: torch.device,
            batch: int = 2000) -> np.ndarray:
    """Logits of `model` for uint8 images, as a float32 numpy array."""
    model.eval()
    out = []
    for i in range(0, len(images), batch):
        x = to_float(torch.as_tensor(images[i:i + batch], device=device))
        out.append(model(x).float().cpu())
    return torch.cat(out).numpy()


def error_rate(model: nn.Module, images: np.ndarray, labels: np.ndarray,
               device: torch.device) -> float:
    return float((predict(model, images, device).argmax(1) != np.asarray(labels)).mean())


def save_model(model, path):
    from safetensors.torch import save_file

    save_file({k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()},
              str(path))


def load_model(path, width):
    from safetensors.torch import load_file

    model = make_cnn(width)
    model.load_state_dict(load_file(str(path)))
    return model.eval()
