"""`pipeline detect`: the real/synthetic instruments on any image sets, at native resolution."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import numpy as np
import typer

from classifiers.detect import DetectConfig, common_size, detect, read_set, views
from classifiers.detector import ARCHS, KINDS, make_net, scores_of, to_input
from synthgap.devices import resolve_device, resolve_precision
from synthgap.errors import fail

SAVED = "detector-{kind}.safetensors"
SETTINGS = ("arch", "crop", "test_crop", "resize", "width")  # what a saved detector's file keeps


def detect_cmd(
        more: Optional[List[Path]] = typer.Argument(None, help="More synthetic sets: --synthetic S1 S2 S3 tests the detector trained on S1 on each.", show_default=False),
        real: Optional[Path] = typer.Option(None, "--real", help="Real images: a folder (any sizes, RGB or grayscale) or an ImageSet .npz."),
        synthetic: Optional[List[Path]] = typer.Option(None, "--synthetic", help="Synthetic images (folder or .npz). Repeat it: the detector trains on the first set and is tested on every one."),
        kind: Optional[List[str]] = typer.Option(None, "--kind", help=f"Detector input, repeatable: {', '.join(KINDS)} (default: pixel and spectrum1d)."),
        arch: str = typer.Option(DetectConfig.arch, "--arch", help=f"Backbone for image inputs: {', '.join(ARCHS)} (trained from scratch)."),
        crop: int = typer.Option(DetectConfig.crop, "--crop", min=8, help="Detector input side: larger images are cropped to it, never resized (unless --resize)."),
        crops: int = typer.Option(DetectConfig.crops, "--crops", min=1, help="Random crops per training image."),
        test_crop: str = typer.Option(DetectConfig.test_crop, "--test-crop", help="Crops scored per test image: centre, or grid (3 x 3, scores averaged)."),
        resize: bool = typer.Option(DetectConfig.resize, "--resize", help="Down-size images to --crop instead of cropping (erases up-sampling traces)."),
        blur_jpeg_prob: Optional[float] = typer.Option(DetectConfig.blur_jpeg_prob, "--blur-jpeg-prob", min=0, max=1, help="Training augmentation as in Wang et al.: blur (sigma 0-3) and JPEG (quality 30-100), each with this probability (default 0.5 for resnet*, 0 for small)."),
        flip: bool = typer.Option(DetectConfig.flip, "--flip", help="Mirror training crops left-right half of the time (natural images; off for digits)."),
        steps: int = typer.Option(DetectConfig.steps, "--steps", min=1, help="Optimiser steps of each detector."),
        samples: int = typer.Option(DetectConfig.samples, "--samples", min=8, help="At most this many images a side."),
        out: Optional[Path] = typer.Option(None, "--out", help="Folder for scores.csv, roc.png and the trained detectors (safetensors)."),
        weights: Optional[Path] = typer.Option(None, "--weights", help="A folder of detectors saved with --out: score --images with them, no training. Or, with --real, a .safetensors file of backbone weights to start training from (e.g. ImageNet weights converted once; never downloaded)."),
        images: Optional[Path] = typer.Option(None, "--images", help="With --weights: the images to score."),
        seed: int = typer.Option(0, "--seed"),
        device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
        precision: str = typer.Option("auto", "--precision", help="How the detectors compute on the CPU: float32; bf16 (bf16 autocast, channels-last); auto: bf16 where the CPU has bf16 instructions (amx_bf16, avx512_bf16), else float32 channels-last. On CUDA: bf16 autocast.")):
    """How well can real be told from synthetic? Classifier two-sample tests on pixels and on the
    azimuthal power spectrum (spectrum1d; --kind adds fourier and grey) and a Deep SVDD, trained on crops at native
    resolution; AUC with its DeLong interval, average precision, accuracy at 0.5 and at a threshold
    chosen on a validation split. AUC 0.5 means no detectable gap."""
    try:
        dev = resolve_device(device)
        mode, why = resolve_precision(precision, device, setting="--precision")
        if weights is not None and weights.is_dir():
            return score_saved(weights, images, out, dev)
        if weights is not None and not (weights.is_file() and weights.suffix == ".safetensors"):
            raise ValueError(f"--weights {weights}: give a folder of saved detectors or a "
                             ".safetensors file of backbone weights")
        synthetic = [*(synthetic or []), *(more or [])]
        if real is None or not synthetic:
            raise ValueError("give --real and at least one --synthetic (or --weights and --images)")
        if test_crop not in ("centre", "grid"):
            raise ValueError(f"--test-crop {test_crop!r}: use centre or grid")
        kinds = kind or ["pixel", "spectrum1d"]
        bad = [k for k in kinds if k not in KINDS]
        if bad or arch not in ARCHS:
            raise ValueError(f"unknown --kind {bad} or --arch {arch!r}; kinds: {', '.join(KINDS)}; "
                             f"archs: {', '.join(ARCHS)}")
        cfg = DetectConfig(steps=steps, samples=samples, seed=seed, arch=arch, crop=crop,
                           crops=crops, test_crop=test_crop, resize=resize,
                           blur_jpeg_prob=blur_jpeg_prob, flip=flip,
                           init=str(weights) if weights else None)
        rows, kept, note = train_and_test(real, synthetic, kinds, cfg, dev, mode)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        fail(str(exc))
    print_rows(rows, real, synthetic,
               f"{note}\n" * bool(note) + f"The detectors computed in {why}.")
    if out is not None:
        write_outputs(out, rows, kept, cfg, synthetic)


def train_and_test(real, synthetic, kinds, cfg: DetectConfig, dev, precision=None):
    sets = [read_set(p)[0] for p in (real, *synthetic)]
    stacked, note = common_size(*sets)
    rng = np.random.default_rng(cfg.seed)
    stacked = [s[rng.permutation(len(s))[:cfg.samples]] for s in stacked]
    rows, kept = detect(stacked[0], stacked[1:], kinds, cfg, cfg.seed, dev, precision=precision)
    return rows, kept, note


def print_rows(rows, real, synthetic, note):
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:  # a log file: keep each row on one line
        console = Console(width=200)
    if note:
        console.print(note, highlight=False)
    table = Table(title=f"{real} (real) vs synthetic; trained on {synthetic[0]}")
    for col in ("instrument", "tested on", "AUC", "95 % CI", "AP", "acc @ 0.5", "threshold",
                "acc @ threshold", "p (acc > 0.5)", "test images"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["instrument"], str(synthetic[r["set"]]), f"{r['auc']:.3f}",
                      f"{r['auc_ci_low']:.3f} – {r['auc_ci_high']:.3f}", f"{r['ap']:.3f}",
                      f"{r['accuracy']:.3f}", f"{r['threshold']:.3g}",
                      f"{r['accuracy_at_threshold']:.3f}", f"{r['p_value']:.2g}", str(r["n_test"]))
    console.print(table)


def write_outputs(out: Path, rows, kept, cfg, synthetic) -> None:
    """scores.csv (set, label, instrument, score), roc.png and one safetensors file per detector
    with its settings (and the input standardisation) in the file."""
    import csv

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    with open(out / "scores.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["instrument", "tested_on", "index", "label", "score"])
        for r in rows:
            for label, scores in enumerate(r["scores"]):
                for i, s in enumerate(scores):
                    w.writerow([r["instrument"], synthetic[r["set"]], i, label, f"{s:.6g}"])
    fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
    for r in rows:
        fpr, tpr = roc_curve(*r["scores"])
        ax.plot(fpr, tpr, label=f"{r['instrument']} on {Path(synthetic[r['set']]).name} "
                                f"(AUC {r['auc']:.3f})")
    ax.plot([0, 1], [0, 1], color="black", linewidth=0.8)
    ax.set_xlabel("false positive rate (real called synthetic)")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "roc.png")
    for kind, (net, mean, std, threshold) in kept.items():
        tensors = {f"net.{k}": v.detach().float().contiguous() for k, v in net.state_dict().items()}
        tensors.update({"mean": mean.float().contiguous(), "std": std.float().contiguous()})
        settings = {k: getattr(cfg, k) for k in SETTINGS}
        meta = {**settings, "kind": kind, "threshold": threshold, "input_shape": list(mean.shape[1:])}
        save_file(tensors, str(out / SAVED.format(kind=kind)), metadata={"detector": json.dumps(meta)})


def roc_curve(real_scores, synthetic_scores):
    scores = np.r_[real_scores, synthetic_scores]
    labels = np.r_[np.zeros(len(real_scores)), np.ones(len(synthetic_scores))]
    order = np.argsort(-scores, kind="stable")
    tp, fp = np.cumsum(labels[order] == 1), np.cumsum(labels[order] == 0)
    return np.r_[0, fp / max(1, fp[-1])], np.r_[0, tp / max(1, tp[-1])]


def load_detector(path: Path):
    """(net, mean, std, settings) of a detector file written by `--out`."""
    import torch
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})["detector"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # noqa: BLE001  (safetensors' own error type is not importable)
        raise ValueError(f"{path} is not a detector written by pipeline detect --out ({exc})") from None
    mean, std = tensors.pop("mean"), tensors.pop("std")
    net = make_net(torch.zeros(1, *meta["input_shape"]), meta["arch"], meta["width"])
    net.load_state_dict({k[len("net."):]: v for k, v in tensors.items()})
    return net.eval(), mean, std, meta


def score_images(net, mean, std, meta, images, device):
    """One score per image (logit; above the saved threshold: called synthetic)."""
    cfg = DetectConfig(**{k: meta[k] for k in SETTINGS}, crops=1)
    v = views(images, cfg, False, np.random.default_rng(0))
    x = (to_input(v.reshape(-1, *v.shape[2:]), meta["kind"], max_side=10 ** 9) - mean) / std
    return scores_of(net.to(device), x, device)[:, 0].reshape(-1, v.shape[1]).mean(1)


def score_saved(weights: Path, images: Optional[Path], out: Optional[Path], device) -> None:
    import csv

    from rich.console import Console

    if images is None:
        raise ValueError("--weights needs --images, the images to score")
    files = sorted(weights.glob(SAVED.format(kind="*")))
    if not files:
        raise ValueError(f"{weights} holds no detector ({SAVED.format(kind='KIND')}); write one "
                         "with pipeline detect --out")
    arrays, names = read_set(images)
    (stacked,), note = common_size(arrays)
    console = Console()
    if note:
        console.print(note, highlight=False)
    results = {}
    for path in files:
        net, mean, std, meta = load_detector(path)
        if tuple(stacked.shape[1:2]) != tuple(mean.shape[1:2]) and meta["kind"] != "spectrum1d":
            raise ValueError(f"{images} has {stacked.shape[1]}-channel images; the detector "
                             f"{path.name} takes {mean.shape[1]}")
        scores = score_images(net, mean, std, meta, stacked, device)
        results[meta["kind"]] = scores
        console.print(f"{path.name}: {len(scores)} images, mean score {scores.mean():.3f}, "
                      f"{(scores > 0).mean():.1%} called synthetic at 0.5, "
                      f"{(scores > meta['threshold']).mean():.1%} at the saved threshold",
                      highlight=False)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "scores.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["file", *(f"score_{k}" for k in results)])
            for i, name in enumerate(names):
                w.writerow([name, *(f"{results[k][i]:.6g}" for k in results)])
