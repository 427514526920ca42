"""Time `pipeline detect` on two folders of RGB 128x128 images: smooth random textures at native
resolution against the same kind of texture down-sampled 2x and up-sampled back by nearest
neighbour (the trace Fourier detectors look for), in each --precision (default float32 and auto:
the CPU's fast path).

    python benchmarks/detect_speed.py [--n 1500] [--arch small --steps 400] [--arch resnet18 --steps 50]
"""

from __future__ import annotations

import argparse
import itertools
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def textures(n: int, seed: int, side: int = 128) -> np.ndarray:
    """uint8 [n, 3, side, side]: white noise blurred at a random scale per image, with colour."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, n, 100):
        m = min(100, n - i)
        x = torch.rand(m, 3, side, side, generator=gen)
        sigma = 0.5 + 2.5 * torch.rand(1, generator=gen).item()
        r = int(3 * sigma) + 1
        k = torch.exp(-torch.arange(-r, r + 1).float() ** 2 / (2 * sigma ** 2))
        k = (k / k.sum()).view(1, 1, 1, -1).repeat(3, 1, 1, 1)
        x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k, groups=3)
        x = F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.transpose(-1, -2), groups=3)
        x = (x - x.amin((1, 2, 3), keepdim=True)) / (x.amax((1, 2, 3), keepdim=True)
                                                      - x.amin((1, 2, 3), keepdim=True))
        out.append((x * 255).round().byte())
    return torch.cat(out).numpy()


def upsampled(images: np.ndarray) -> np.ndarray:
    x = F.avg_pool2d(torch.as_tensor(images).float(), 2)
    return F.interpolate(x, scale_factor=2, mode="nearest").round().byte().numpy()


def write(folder: Path, images: np.ndarray) -> None:
    folder.mkdir(parents=True)
    for i, im in enumerate(images):
        Image.fromarray(im.transpose(1, 2, 0)).save(folder / f"{i:05d}.png")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1500)
    ap.add_argument("--arch", action="append", default=None)
    ap.add_argument("--steps", action="append", type=int, default=None)
    ap.add_argument("--precision", action="append", default=None)
    args = ap.parse_args()
    archs, steps = args.arch or ["small", "resnet18"], args.steps or [400, 50]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write(tmp / "real", textures(args.n, 0))
        write(tmp / "upsampled", upsampled(textures(args.n, 1)))
        for (arch, n_steps), precision in itertools.product(zip(archs, steps),
                                                            args.precision or ["float32", "auto"]):
            start = time.time()
            proc = subprocess.run([sys.executable, "-m", "pipeline", "detect", "--real", tmp / "real",
                                   "--synthetic", tmp / "upsampled", "--arch", arch,
                                   "--steps", str(n_steps), "--precision", precision],
                                  capture_output=True, text=True)
            seconds = time.time() - start
            if proc.returncode:
                sys.exit(proc.stderr)
            aucs = re.findall(r"│\s*(c2st-\S+|svdd)\s*│[^│]*│\s*([0-9.]+)\s*│\s*([0-9.]+ – [0-9.]+)",
                              proc.stdout)
            mode = re.search(r"The detectors computed in (.*)\.", proc.stdout).group(1)
            print(f"{arch}, {n_steps} steps, {args.n} images a side, {mode}: {seconds:.0f} s; AUC "
                  + ", ".join(f"{k} {v} ({ci})" for k, v, ci in aucs), flush=True)


if __name__ == "__main__":
    main()
