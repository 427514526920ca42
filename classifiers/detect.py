"""The detector on a user's own images (`pipeline detect`): sets at their native resolution.

Wang et al. (2020) find CNN-generated images by training on crops at native resolution: resizing
erases the up-sampling traces a detector should see. So images larger than the detector's input are
cropped, never resized unless asked (`resize`): the training half gives `crops` random crops per
image, the test half its centre crop (or a grid of crops whose scores are averaged). Sets of
different sizes, or a folder of mixed sizes, are centre-cropped to the smallest height and width
among them, and the caller is told so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from classifiers.detector import (GapConfig, average_precision, best_threshold, deep_svdd, fit_scores,
                                 score_metrics, shrink, to_input)

MIN_IMAGES = 8


@dataclass
class DetectConfig(GapConfig):
    """`pipeline detect`'s detectors: [gap]'s training settings, and how they see images of any
    size (`pipeline detect --help` says what each does)."""
    arch: str = "small"          # the backbone of image inputs (detector.ARCHS)
    crop: int = 64               # the input side: larger images are cropped to it
    crops: int = 4               # random crops per training image
    test_crop: str = "centre"    # crops scored per test image: centre, or a 3 x 3 grid
    resize: bool = False         # down-size to `crop` instead of cropping
    blur_jpeg_prob: float | None = None  # Wang et al.'s blur and JPEG training augmentation, each
    #                              with this probability (None: 0.5 for the ResNets, 0 for small)
    flip: bool = False           # mirror training crops half of the time
    init: str | None = None      # a .safetensors file of backbone weights to start from


def read_set(path: Path) -> tuple[list[np.ndarray], list[str]]:
    """Images [C, H, W] (uint8, any sizes) and their names, from a folder or an ImageSet .npz."""
    from synthgap.data.imageset import load_imageset, read_files

    path = Path(path)
    if path.is_dir():
        files, arrays = read_files(path, "auto")
        images, names = [a.transpose(2, 0, 1) for a in arrays], [f.name for f in files]
    elif path.suffix == ".npz" and path.is_file():
        s = load_imageset(path)
        images, names = list(s.images), [f"{path.name}#{i}" for i in range(len(s.images))]
    else:
        raise ValueError(f"{path} is neither a folder of images nor an ImageSet .npz")
    if len(images) < MIN_IMAGES:
        raise ValueError(f"{path} holds {len(images)} image(s); the detector needs at least "
                         f"{MIN_IMAGES} a side")
    return images, names


def centre_crop(image: np.ndarray, h: int, w: int) -> np.ndarray:
    top, left = (image.shape[-2] - h) // 2, (image.shape[-1] - w) // 2
    return image[..., top:top + h, left:left + w]


def common_size(*sets: list[np.ndarray]) -> tuple[list[np.ndarray], str]:
    """Every set stacked to one size: channels to 3 where sets mix grayscale and colour, and each
    image centre-cropped to the smallest height and width of all (a note says what was done, ""
    when nothing was)."""
    channels = {im.shape[0] for s in sets for im in s}
    if len(channels) > 1:
        if channels - {1, 3}:
            raise ValueError(f"cannot compare images of {sorted(channels)} channels")
        sets = tuple([np.repeat(im, 3, 0) if im.shape[0] == 1 else im for im in s] for s in sets)
    sizes = {im.shape[1:] for s in sets for im in s}
    h, w = min(size[0] for size in sizes), min(size[1] for size in sizes)
    note = ""
    if len(sizes) > 1:
        note = (f"images of {len(sizes)} sizes (e.g. {', '.join(f'{a}x{b}' for a, b in sorted(sizes)[:3])})"
                f" centre-cropped to {h}x{w}")
    return [np.stack([centre_crop(im, h, w) for im in s]) for s in sets], note


def random_crops(images: np.ndarray, size: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """k random size×size crops of each image [N, C, H, W] -> [N·k, C, size, size], image-major."""
    n, _, h, w = images.shape
    tops = rng.integers(0, h - size + 1, (n, k))
    lefts = rng.integers(0, w - size + 1, (n, k))
    return np.stack([images[i, :, t:t + size, l:l + size]
                     for i in range(n) for t, l in zip(tops[i], lefts[i])])


def test_crops(images: np.ndarray, size: int, mode: str) -> np.ndarray:
    """Fixed crops of each image: [N, K, C, size, size]; K = 1 (`centre`) or a 3×3 grid (`grid`)
    spread evenly over the image."""
    n, _, h, w = images.shape
    if mode == "centre":
        return centre_crop(images, size, size)[:, None]
    ys = np.linspace(0, h - size, 3).round().astype(int)
    xs = np.linspace(0, w - size, 3).round().astype(int)
    return np.stack([images[:, :, t:t + size, l:l + size] for t in ys for l in xs], 1)


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """Area down-sizing so the longer side is `size` (only when the user asks: it erases traces)."""
    import torch

    if max(images.shape[-2:]) <= size:
        return images
    x = shrink(torch.as_tensor(images).float(), size)
    return x.round().clamp(0, 255).to(torch.uint8).numpy()


def blur_jpeg_flip(images: np.ndarray, p: float, flip: bool, rng: np.random.Generator) -> np.ndarray:
    """Wang et al.'s training augmentation of uint8 [N, C, H, W]: each image, with probability p,
    Gaussian-blurred (sigma uniform in [0, 3]) and, independently with probability p, re-encoded as
    JPEG (quality uniform in 30..100); with `flip`, mirrored left-right half of the time."""
    import io

    from PIL import Image, ImageFilter

    out = images.copy()
    for i, im in enumerate(images):
        if flip and rng.random() < 0.5:
            out[i] = out[i][..., ::-1]
        if p <= 0:
            continue
        blur, jpeg = rng.random() < p, rng.random() < p
        if not (blur or jpeg):
            continue
        pil = Image.fromarray(out[i][0] if out.shape[1] == 1 else out[i].transpose(1, 2, 0))
        if blur:
            pil = pil.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 3))))
        if jpeg:
            buf = io.BytesIO()
            pil.save(buf, "JPEG", quality=int(rng.integers(30, 101)))
            pil = Image.open(io.BytesIO(buf.getvalue()))
            pil.load()
        a = np.asarray(pil)
        out[i] = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    return out


def views(images: np.ndarray, cfg: DetectConfig, train: bool,
          rng: np.random.Generator) -> np.ndarray:
    """What the detector sees of uint8 images [N, C, H, W]: with `resize`, the images down-sized
    to `crop`; else, when larger than `crop`, `crops` random crops each for training ([N·k, ...])
    and the test crops for scoring ([N, K, ...]); as they are otherwise ([N, 1, ...] to score)."""
    size = cfg.crop
    if cfg.resize:
        images = resize(images, size)
    elif max(images.shape[-2:]) > size:
        if train:
            return random_crops(images, size, cfg.crops, rng)
        return test_crops(images, size, cfg.test_crop)
    return images if train else images[:, None]


def metrics(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    """score_metrics (at logit 0, i.e. 0.5), average precision and the accuracy at `threshold`."""
    return {**score_metrics(scores, labels), "ap": average_precision(scores, labels),
            "threshold": threshold,
            "accuracy_at_threshold": float(((scores > threshold) == (labels == 1)).mean())}


def detect(real: np.ndarray, synthetic: list[np.ndarray], kinds: list[str], cfg: DetectConfig,
           seed: int, device, progress=None, precision=None) -> tuple[list[dict], dict]:
    """Train one detector per input kind on half of `real` against half of `synthetic[0]` (a fifth
    of that half kept to choose a threshold; in `precision`, synthgap/devices.py), and test it on
    the other halves and on every other synthetic set (as many images as the real test half).
    Returns the rows (instrument, set,
    metrics) and {kind: (net, mean, std)} of the trained detectors, plus the scores per set."""
    import torch

    rng = np.random.default_rng(seed)
    n = min(len(real), len(synthetic[0]))
    r, s = rng.permutation(len(real))[:n], rng.permutation(len(synthetic[0]))[:n]
    half, val = n // 2, max(2, (n // 2) // 5)
    r_train, r_val, r_test = real[r[val:half]], real[r[:val]], real[r[half:]]
    s_train, s_val, s_test = synthetic[0][s[val:half]], synthetic[0][s[:val]], synthetic[0][s[half:]]
    tests = [s_test] + [x[rng.permutation(len(x))[:len(r_test)]] for x in synthetic[1:]]
    # what the detectors see, drawn once for every kind: augmented training crops, fixed test crops
    blur_jpeg = cfg.blur_jpeg_prob if cfg.blur_jpeg_prob is not None else \
        (0.0 if cfg.arch == "small" else 0.5)
    aug = (blur_jpeg, cfg.flip)
    train = [blur_jpeg_flip(views(a, cfg, True, rng), *aug, rng) for a in (r_train, s_train)]
    evals = [views(a, cfg, False, rng) for a in (r_val, s_val, r_test, *tests)]  # [N, K, ...]
    y = torch.cat([torch.zeros(len(train[0])), torch.ones(len(train[1]))])
    rows, kept = [], {}
    for kind in kinds:
        def inputs(v):
            return to_input(v, kind, max_side=10 ** 9)

        net, scores, (mean, std) = fit_scores(
            inputs(np.concatenate(train)), y, [inputs(e.reshape(-1, *e.shape[2:])) for e in evals],
            cfg, seed, device, progress, cfg.arch, cfg.init, precision)
        # one score per image: the mean over its crops
        scores = [sc.reshape(len(e), -1).mean(1) for sc, e in zip(scores, evals)]
        threshold = best_threshold(np.r_[scores[0], scores[1]],
                                   np.r_[np.zeros(len(scores[0])), np.ones(len(scores[1]))])
        for j, sc in enumerate(scores[3:]):
            labels = np.r_[np.zeros(len(scores[2])), np.ones(len(sc))]
            rows.append({"instrument": f"c2st-{kind}", "set": j,
                         **metrics(np.r_[scores[2], sc], labels, threshold),
                         "scores": (scores[2], sc)})
        kept[kind] = (net.cpu(), mean, std, threshold)
    # Deep SVDD learns from the real training crops alone; tested on each set's first test crop
    for j in range(len(tests)):
        row = deep_svdd(train[0], evals[2][:, 0], evals[3 + j][:, 0], cfg, seed, device, progress,
                        with_scores=True, precision=precision)
        dist = np.r_[row["scores"]]
        labels = np.r_[np.zeros(len(row["scores"][0])), np.ones(len(row["scores"][1]))]
        rows.append({**row, **metrics(dist - np.median(dist), labels, 0.0), "set": j})
    return rows, kept
