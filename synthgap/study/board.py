"""The report's TensorBoard scalars: each mixture's error and worth in real images, and each gap
source's AUCs, in a run of their own (TensorBoard colours runs, not tags), with the custom-scalars
charts that overlay them; and the sample grids."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np


def log_step(budget: int) -> int:
    """TensorBoard's x for a budget: 100·log10(budget) (55 -> 174, 385 -> 259, 5,500 -> 374,
    38,500 -> 459), so budgets spread as on the figures' log axis."""
    return round(100 * math.log10(budget))


X_AXIS = "x = 100·log10(real images): 55 -> 174, 385 -> 259, 5,500 -> 374, 38,500 -> 459"


def tensorboard_curves(tb: Path, summary: list[dict], worths: list[dict], regimes: list[str]) -> dict:
    """Each mixture's error and worth in real images against the budget, in its own run
    `mixtures/<mixture>` under tags `error` and `worth_in_real_images` (with regimes, a tag per
    regime: `error/<regime>`); returns the custom-scalars charts overlaying them."""
    from torch.utils.tensorboard import SummaryWriter

    writers: dict = {}

    def scalar(mixture, tag, value, budget, regime=""):
        tag = f"{tag}/{regime}" if regime else tag
        if mixture not in writers:
            writers[mixture] = SummaryWriter(str(tb / "mixtures" / mixture))
        writers[mixture].add_scalar(tag, value, log_step(budget))

    for r in summary:
        scalar(r["mixture"], "error", r["mean_error"], r["budget"], r.get("regime", ""))
    for w in worths:
        if math.isfinite(w["real_images"]):
            scalar(w["mixture"], "worth_in_real_images", w["real_images"], w["budget"],
                   w.get("regime", ""))
    for w in writers.values():
        w.close()
    charts = {"error vs data": {}, "worth in real images": {}}
    for regime in regimes or [""]:
        suffix = f"/{regime}" if regime else ""
        charts["error vs data"][f"MNIST test error of every mixture{suffix} ({X_AXIS})"] = [
            "Multiline", [f"^error{re.escape(suffix)}$"]]
        charts["worth in real images"][f"what every mixture is worth in real images{suffix} "
                                       f"({X_AXIS})"] = [
            "Multiline", [f"^worth_in_real_images{re.escape(suffix)}$"]]
    return charts


def tensorboard_gaps(tb: Path, gaps: list[dict]) -> dict:
    """Each gap source's AUC of every instrument (and its Fréchet distance) against the budget in
    its own run `sources/<source>`; a source without a budget is a flat line across the budgets.
    Returns the custom-scalars charts."""
    from torch.utils.tensorboard import SummaryWriter

    steps = sorted({log_step(int(g["budget"])) for g in gaps if g["budget"] != ""}) or [0]
    writers: dict = {}
    frechet = set()  # (run, step) whose Fréchet distance is written (one per gap stage)
    for g in gaps:
        run = g["source"] + (f"-{g['renderer']}" if g.get("renderer") else "")
        if run not in writers:
            writers[run] = SummaryWriter(str(tb / "sources" / run))
        for step in [log_step(int(g["budget"]))] if g["budget"] != "" else steps:
            writers[run].add_scalar(f"gap/{g['instrument']}", g["auc"], step)
            if (run, step) not in frechet:
                frechet.add((run, step))
                writers[run].add_scalar("gap/frechet", g["frechet"], step)
    for w in writers.values():
        w.close()
    return {f"{i} AUC of every source ({X_AXIS})": ["Multiline", [f"^gap/{re.escape(i)}$"]]
            for i in sorted({g["instrument"] for g in gaps}) + ["frechet"]}


def add_grids(writer, grids: dict[str, np.ndarray]) -> None:
    import torch
    from torchvision.utils import make_grid

    for name, images in grids.items():
        grid = make_grid(torch.as_tensor(images[:64]), nrow=8, padding=2, pad_value=128)
        writer.add_image(f"samples/{name}", grid)
