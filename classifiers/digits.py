"""The downstream digit classifier: a small CNN trained for a fixed number of steps on a mixture.

A mixture is a list of sources (uint8 images [N, 1, 28, 28], labels) with the fraction of each batch
drawn from each, so 55 real images are not drowned by 55,000 synthetic ones. Every source gets the
same light augmentation (a random shift, rotation and scale). Data live on the device; no DataLoader.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

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


DEFAULTS = asdict(ClassifierConfig())


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but torch sees no CUDA device; "
                           "use --device auto or cpu")
    return torch.device(device)


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


def train_classifier(sources: list[tuple[np.ndarray, np.ndarray, float]], cfg: dict, seed: int,
                     device: torch.device, progress=None) -> nn.Module:
    """Train a fresh CNN on `sources` = [(images uint8 [N,C,H,W], labels, batch fraction), ...]."""
    cfg = {**DEFAULTS, **cfg}
    torch.manual_seed(seed)
    gen = torch.Generator(device=device).manual_seed(seed)
    data = [(torch.as_tensor(x, device=device), torch.as_tensor(y, device=device))
            for x, y, _ in sources]
    counts = batch_counts(cfg["batch_size"], [f for _, _, f in sources])
    model = make_cnn(cfg["width"], channels=data[0][0].shape[1]).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg["lr"], total_steps=cfg["steps"])
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    model.train()
    for step in range(cfg["steps"]):
        xs, ys = [], []
        for (x, y), k in zip(data, counts):
            if k:
                idx = torch.randint(len(x), (k,), generator=gen, device=device)
                xs.append(x[idx])
                ys.append(y[idx])
        x = augment(to_float(torch.cat(xs)), gen, cfg["shift"], cfg["rotate"], cfg["scale"])
        with autocast:
            loss = F.cross_entropy(model(x), torch.cat(ys))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if progress is not None and ((step + 1) % 25 == 0 or step + 1 == cfg["steps"]):
            progress(step + 1, cfg["steps"])
    return model.eval()


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
