"""`pipeline bench`: how fast each part of the study runs on one device, measured in one run.

Every figure is the median of `repeats` timed runs after one untimed warm-up run, with the lowest
and highest of them, at the torch threads of one of the sweep's workers. Each network (a
classifier cell, a group of cells, the refiner, a gap detector) is timed in the project's loop
(the images live on the device and every batch is drawn there) in float32 and on the fast path
(`[runner] cpu_precision`, synthgap/devices.py), with their ratio. The refiner and the gap
detector are also timed in a reference loop written in the common style of public CycleGAN code:
the images as PNG files on disk, a `Dataset` that opens, decodes and normalises one image per
item, a `DataLoader` with worker processes; the same networks, losses, batch size and precision.
Its ratio to the project's loop on the fast path is what keeping the data on the device buys.
"""

from __future__ import annotations

import functools
import os
import random
import statistics
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from synthgap.devices import FLOAT32, Precision

# run sizes per device type: enough work per timed run to dwarf the timer, small enough for a
# 2-core CPU to finish the whole bench in a few minutes
SIZES = {"cpu": {"digits": 5000, "images": 2000, "classifier_steps": 30, "group": 8,
                 "refiner_steps": 20, "gap_steps": 60},
         "cuda": {"digits": 8000, "images": 2000, "classifier_steps": 300, "group": 24,
                  "refiner_steps": 200, "gap_steps": 300}}


class PngImages(Dataset):
    """One PNG per item, opened, decoded and normalised when asked for: (image, label)."""

    def __init__(self, files: list[Path], labels, mean=0.5, std=0.5):
        self.files, self.labels, self.mean, self.std = files, labels, mean, std

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        from PIL import Image
        from torchvision.transforms.functional import to_tensor

        with Image.open(self.files[i]) as im:
            x = to_tensor(im)
        return (x - self.mean) / self.std, self.labels[i]


class UnalignedPngs(Dataset):
    """CycleGAN's unaligned pairs: render i with a real image drawn at random, both as PNGs."""

    def __init__(self, renders: PngImages, real: PngImages):
        self.renders, self.real = renders, real

    def __len__(self):
        return len(self.renders)

    def __getitem__(self, i):
        return (*self.renders[i], *self.real[random.randrange(len(self.real))])


def write_pngs(images: np.ndarray, folder: Path) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i, img in enumerate(images):
        files.append(folder / f"{i:06d}.png")
        Image.fromarray(img[0]).save(files[-1])
    return files


def forever(loader: DataLoader):
    while True:
        yield from loader


def loader(dataset: Dataset, batch_size: int, device: torch.device, workers: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                      num_workers=workers, pin_memory=device.type == "cuda",
                      persistent_workers=workers > 0)


def timed(fn, repeats: int, device: torch.device) -> list[float]:
    """Seconds of `repeats` calls of `fn` after one warm-up call, the device drained each time."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    seconds = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        seconds.append(time.perf_counter() - start)
    return seconds


def figure(part: str, loop: str, unit: str, per_run: float, seconds: list[float]) -> dict:
    rates = sorted(per_run / s for s in seconds)
    return {"part": part, "loop": loop, "unit": unit, "median": statistics.median(rates),
            "low": rates[0], "high": rates[-1], "repeats": len(rates)}


def rendering(device: torch.device, size: dict, repeats: int, add) -> None:
    """Time font rendering, one worker and all cores; `add` takes each figure."""
    from renderers.fontfiles import discover
    from renderers.fonts import render_digits

    fonts = [c.path for c in discover() if c.ok]
    n = size["digits"]
    for w in sorted({1, os.cpu_count() or 1}):
        # a call starts its worker processes, whose glyph caches start cold
        add(figure("font rendering", f"{w} worker(s), {n} a call", "digits/s", n, timed(
            lambda: render_digits(fonts, n, 0, workers=w), repeats, device)))


def classifier(device: torch.device, size: dict, images: tuple, compare, modes: dict) -> None:
    """Time the classifier, one cell and a group of cells at once, on `images` (bench_images) in
    each of `modes` (loop name -> Precision); `compare` takes them."""
    from classifiers.digits import ClassifierConfig, train_classifiers

    real, real_labels, renders, labels = images
    cfg = ClassifierConfig(steps=size["classifier_steps"])
    cell = ([(real, real_labels, 0.5), (renders, labels, 0.5)], 0)
    for g in (1, size["group"]):
        part = "classifier cell" if g == 1 else f"classifier, {g} cells at once"
        compare(part, {loop: functools.partial(train_classifiers, [cell] * g, cfg, device,
                                               precision=mode) for loop, mode in modes.items()},
                g * cfg.steps, cfg.batch_size, "cell-steps/s")


def bench_images(m: int) -> tuple:
    """m real MNIST training images and m font renders, with their labels."""
    from renderers.fontfiles import discover
    from renderers.fonts import render_digits
    from synthgap.data.mnist import load_mnist

    mnist = load_mnist()
    renders, labels = render_digits([c.path for c in discover() if c.ok], m, 1)
    return mnist["train_images"][:m, None], mnist["train_labels"][:m], renders, labels


def networks(device: torch.device, size: dict, images: tuple, compare, modes: dict,
             workers: int, folder: Path) -> None:
    """Time the refiner and the pixel C2ST's detector on `images` (bench_images), each in the
    project's loop in each of `modes` (loop name -> Precision; the last the fast path) and, on the
    fast path, in the reference loop (PNG files through a DataLoader, `workers` workers, in
    `folder`); `compare` takes them."""
    from classifiers.detector import GapConfig, make_net, to_input, train_net
    from classifiers.digits import ClassifierConfig, make_cnn
    from gan.config import RefinerConfig
    from gan.train import train_refiner

    real, real_labels, renders, labels = images
    m = len(real)
    png_renders = PngImages(write_pngs(renders, folder / "renders"), labels)
    png_real = PngImages(write_pngs(real, folder / "real"), real_labels)
    cfg = RefinerConfig(steps=size["refiner_steps"], log_every=10 ** 9)
    semantic = make_cnn(ClassifierConfig().width)  # untrained: the cost of the loss is what counts

    def refiner(precision, batches=None):
        return train_refiner(real, renders, labels, cfg, 0, device, classifier=semantic,
                             real_labels=real_labels, batches=batches, precision=precision)

    pairs = forever(loader(UnalignedPngs(png_renders, png_real), cfg.batch_size, device, workers))
    fast_loop, fast = list(modes.items())[-1]
    reference = f"PNG DataLoader, {workers} workers, {fast.describe()}"
    against = {reference: fast_loop}  # the data path's cost, in one precision
    compare("refiner", {**{loop: functools.partial(refiner, mode) for loop, mode in modes.items()},
                        reference: lambda: refiner(fast, pairs)}, cfg.steps, cfg.batch_size,
            against=against)

    gap_cfg = GapConfig(steps=size["gap_steps"])
    x = to_input(np.concatenate([real, renders]), "pixel", gap_cfg.max_side)
    y = torch.cat([torch.zeros(m), torch.ones(m)])
    mean, std = x.mean(0), x.std(0) + 1e-6
    x = (x - mean) / std

    def bce(out, t):
        return torch.nn.functional.binary_cross_entropy_with_logits(out[:, 0], t)

    def gap(precision, batches=None):
        torch.manual_seed(0)
        train_net(make_net(x, "small", gap_cfg.width), bce, x, y, gap_cfg, 0, device,
                  batches=batches, precision=precision)

    # to_tensor reads [0, 1], as the project's pixel inputs: the same standardisation
    both = PngImages(png_real.files + png_renders.files, y, mean, std)
    batches = forever(loader(both, gap_cfg.batch_size, device, workers))
    compare("gap detector (c2st-pixel)",
            {**{loop: functools.partial(gap, mode) for loop, mode in modes.items()},
             reference: lambda: gap(fast, batches)}, gap_cfg.steps, gap_cfg.batch_size,
            against=against)


def run_bench(device: torch.device, repeats: int = 3, log=print, sizes: dict | None = None,
              fast: Precision | None = None, threads: int = 1) -> dict:
    """Every figure of the bench on `device` (at `sizes`, default SIZES of its type) with `threads`
    torch threads: each network in float32 and in `fast` (default: what `[runner] cpu_precision =
    "auto"` resolves to here), with their ratio; {"device", "torch", "threads", "sizes", "fast",
    "rows", ...}."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return measure(device, repeats, log, sizes or SIZES[device.type], fast, threads)
    finally:
        torch.set_num_threads(before)


def measure(device: torch.device, repeats: int, log, size: dict, fast: Precision | None,
            threads: int) -> dict:
    """run_bench's figures, under its torch threads."""
    from synthgap.devices import device_name, resolve_precision

    why = None
    if fast is None:
        fast, why = resolve_precision("auto", device.type)
    modes = {"project, float32": FLOAT32, f"project, {fast.describe()}": fast}
    rows: list[dict] = []
    cores = os.cpu_count() or 1
    workers = min(4, cores)  # DataLoader workers of the reference loops

    def add(row):
        rows.append(row)
        spread = f" ({row['low']:.1f}-{row['high']:.1f})" if row["low"] is not None else ""
        log(f"{row['part']:<28} {row['loop']:<36} {row['median']:>10.2f} {row['unit']}{spread}")

    def compare(part, loops: dict, steps: int, batch: int, unit: str = "steps/s",
                against: dict | None = None):
        """Time each loop (name -> function); their figures, then each loop's ratio to the one
        `against` names (default: the first, the project's loop in float32)."""
        medians = {}
        for loop, fn in loops.items():
            seconds = timed(fn, repeats, device)
            add(figure(part, loop, unit, steps, seconds))
            add(figure(part, loop, "images/s", steps * batch, seconds))
            medians[loop] = rows[-1]["median"]
        first, *others = medians
        for loop in others:
            base = (against or {}).get(loop, first)
            add({"part": part, "loop": f"{loop} / {base}", "unit": "x",
                 "median": medians[loop] / medians[base], "low": None, "high": None,
                 "repeats": repeats})

    images = bench_images(size["images"])
    rendering(device, size, repeats, add)
    classifier(device, size, images, compare, modes)
    with tempfile.TemporaryDirectory() as tmp:
        networks(device, size, images, compare, modes, workers, Path(tmp))
    name = device_name(device.type) + ("" if device.type == "cuda" else f", {cores} cores")
    return {"device": name, "device_type": device.type, "torch": torch.__version__,
            "threads": threads, "cores": cores, "dataloader_workers": workers,
            "sizes": size, "fast": fast.describe(), "fast_why": why, "rows": rows}


def markdown(result: dict) -> str:
    """The bench table as Markdown, headed by the device and versions it was measured on."""
    sizes = ", ".join(f"{k} {v}" for k, v in result["sizes"].items())
    head = [f"`pipeline bench --device {result['device_type']}` on {result['device']}, torch "
            f"{result['torch']}.",
            f"Torch threads: {result['threads']}; DataLoader workers: "
            f"{result['dataloader_workers']}; sizes: {sizes}.",
            f"The fast path here: {result['fast_why'] or result['fast']}."]
    lines = [*(wrapped for line in head for wrapped in textwrap.wrap(line, 100)), "",
             "| part | loop | median | range | unit |", "|---|---|---:|---:|---|"]
    for r in result["rows"]:
        spread = f"{r['low']:.1f} – {r['high']:.1f}" if r["low"] is not None else ""
        lines.append(f"| {r['part']} | {r['loop']} | {r['median']:.2f} | {spread} | {r['unit']} |")
    return "\n".join(lines) + "\n"
