"""`pipeline train-refiner` and `pipeline refine`: the refiner on its own, on any two image sets."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import List, Optional

import typer

from gan.config import RefinerConfig, check, check_inputs
from renderers.cli import save_with_grid
from synthgap.data.imageset import load_images
from synthgap.devices import resolve_device
from synthgap.errors import UserError, fail
from synthgap.settings import apply_sets

SET_HELP = "Refiner knob, e.g. --set steps=500 --set lambda_sem=0 (see RefinerConfig in gan/config.py)."


def parse_knobs(sets: list[str]) -> RefinerConfig:
    """RefinerConfig with `--set KEY=VALUE` applied, checked as `pipeline run --set` is: each key
    and type, then each value's range."""
    try:
        cfg = RefinerConfig(**apply_sets(asdict(RefinerConfig()), RefinerConfig, sets))
        check(cfg)
        return cfg
    except UserError as exc:
        fail(exc)


def train_refiner_cmd(
        real: Path = typer.Option(..., "--real", help="Real images: ImageSet .npz or a folder of images (labels unused)."),
        synthetic: Path = typer.Option(..., "--synthetic", help="Synthetic images: ImageSet .npz (labels enable semantic consistency) or a folder."),
        out: Path = typer.Option(Path("refiner.safetensors"), "--out", help="Weights file to write (safetensors)."),
        set_: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP),
        seed: int = typer.Option(0, "--seed"),
        logdir: Optional[Path] = typer.Option(None, "--logdir", help="TensorBoard folder for losses and image grids."),
        device: str = typer.Option("auto", "--device", help="auto, cpu or cuda.")):
    """Train the CycleGAN-style refiner G: synthetic -> real (and F: real -> synthetic)."""
    from rich.progress import Progress

    from gan.train import semantic_classifier, train_refiner
    from gan.weights import save_refiner

    if out.suffix != ".safetensors":
        fail(f"--out {out} must end in .safetensors")
    cfg = parse_knobs(set_)
    try:
        real_images, real_labels = load_images(real, "auto")
        syn_images, labels = load_images(synthetic, "auto")
        if real_images.shape[1:] != syn_images.shape[1:]:
            raise ValueError(f"--real images are {real_images.shape[1:]} but --synthetic are "
                             f"{syn_images.shape[1:]}; give both one size and channel count")
        check_inputs(cfg, labels, real_labels, cfg.semantic(labels))
        dev = resolve_device(device)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    writer = None
    if logdir is not None:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(logdir))
    with Progress() as bar:
        classifier = None
        if cfg.semantic(labels):
            task = bar.add_task("semantic classifier", total=cfg.sem_steps)
            classifier = semantic_classifier(syn_images, labels, cfg, seed, dev,
                                             lambda i, n: bar.update(task, completed=i))
        task = bar.add_task("refiner", total=cfg.steps)
        nets, history = train_refiner(real_images, syn_images, labels, cfg, seed, dev,
                                      lambda i, n: bar.update(task, completed=i), writer, classifier,
                                      real_labels)
    if writer is not None:
        writer.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    save_refiner(nets, tmp, cfg, real_images.shape[1])
    tmp.replace(out)
    typer.echo(f"wrote {out}; last losses {json.dumps({k: round(v, 4) for k, v in history[-1].items()})}")


def refine_cmd(weights: Path = typer.Option(..., "--weights", help="A refiner .safetensors from train-refiner."),
               images: Path = typer.Option(..., "--images", help="ImageSet .npz or folder of synthetic images."),
               out: Path = typer.Option(Path("refined.npz"), "--out", help="ImageSet to write (plus a grid PNG)."),
               variants: int = typer.Option(1, "--variants", min=1, help="Refined variants per image, each with its own warp noise (needs a refiner trained with warp=true)."),
               seed: int = typer.Option(0, "--seed", help="Seed of the warp noise."),
               device: str = typer.Option("auto", "--device", help="auto, cpu or cuda.")):
    """Apply a trained refiner's G to synthetic images; labels carry over (variant-major with
    --variants: every image's first variant, then every image's second, ...)."""
    import numpy as np

    from gan.refine import refine
    from gan.weights import load_generator

    try:
        dev = resolve_device(device)
        G = load_generator(weights)
        x, labels = load_images(images, "auto")
        if x.shape[1] != G.channels:
            raise ValueError(f"{images} has {x.shape[1]} channel(s) but the refiner expects {G.channels}")
        refined = refine(G, x, dev, variants=variants, seed=seed)
    except (ValueError, FileNotFoundError, OSError) as exc:
        fail(str(exc))
    labels = np.tile(labels if labels is not None else np.full(len(x), -1, np.int64), variants)
    png = save_with_grid(refined, labels, {"source": "refined", "weights": str(weights)}, out)
    typer.echo(f"wrote {out} ({len(refined)} refined images) and {png}")
