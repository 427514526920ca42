"""The stage functions of the experiments: each reads its inputs (folders of upstream stages),
calls the library, and writes its files into `out`. Heavy imports stay inside the functions so the
runner can plan without loading torch."""

from __future__ import annotations

import json
from pathlib import Path

from data.imageset import ImageSet, load_imageset, save_imageset

MIXTURES = ("real",)


def mnist(params, inputs, out, ctx):
    """Read and check MNIST; write train.npz and test.npz."""
    from data.mnist import load_mnist

    d = load_mnist(ctx.data_dir)
    for split in ("train", "test"):
        images = d[f"{split}_images"][:, None]
        save_imageset(ImageSet(images, d[f"{split}_labels"], {"source": f"mnist-{split}"}),
                      out / f"{split}.npz")
    return {"train": len(d["train_labels"]), "test": len(d["test_labels"])}


def split(params, inputs, out, ctx):
    """Stratified random pool / holdout split of MNIST train."""
    from data.splits import pool_holdout

    train = load_imageset(Path(inputs["mnist"]) / "train.npz")
    pool, holdout = pool_holdout(train.labels, params["holdout"], params["seed"])
    save_imageset(train.subset(pool, source="mnist-pool"), out / "pool.npz")
    save_imageset(train.subset(holdout, source="mnist-holdout"), out / "holdout.npz")
    return {"pool": len(pool), "holdout": len(holdout)}


def budget(params, inputs, out, ctx):
    """The seed's nested, stratified budget of real images from the pool."""
    from data.splits import nested_budget

    pool = load_imageset(Path(inputs["split"]) / "pool.npz")
    index = nested_budget(pool.labels, params["budget"], params["seed"])
    save_imageset(pool.subset(index, source="mnist-budget", budget=params["budget"],
                              seed=params["seed"]), out / "budget.npz")
    return {"images": len(index), "per_class": [int((pool.labels[index] == c).sum())
                                                for c in range(10)]}


def classify(params, inputs, out, ctx):
    """Train the digit CNN on the cell's mixture; test error on the MNIST test set."""
    from safetensors.torch import save_file

    from classifiers.digits import error_rate, resolve_device, train_classifier

    device = resolve_device(ctx.device)
    real = load_imageset(Path(inputs["budget"]) / "budget.npz")
    test = load_imageset(Path(inputs["mnist"]) / "test.npz")
    if params["mixture"] not in MIXTURES:
        raise ValueError(f"unknown mixture {params['mixture']!r}; known: {', '.join(MIXTURES)}")
    sources = [(real.images, real.labels, 1.0)]
    cfg = {k: v for k, v in params.items() if k not in ("mixture", "budget", "seed")}
    model = train_classifier(sources, cfg, params["seed"], device, ctx.report)
    save_file({k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()},
              str(out / "model.safetensors"))
    err = error_rate(model, test.images, test.labels, device)
    return {"test_error": err, "n_real": len(real), "n_synthetic": 0, "steps": params["steps"],
            "device": str(device)}


def report(params, inputs, out, ctx):
    """results.csv, summary.csv, plots and TensorBoard from every classify cell."""
    from report import write_report

    rows = []
    for name, folder in inputs.items():
        if not name.startswith("classify/"):
            continue
        meta = json.loads((Path(folder) / "meta.json").read_text())
        p, m = meta["params"], meta["metrics"]
        rows.append({"mixture": p["mixture"], "budget": p["budget"], "seed": p["seed"],
                     "test_error": m["test_error"], "n_real": m["n_real"],
                     "n_synthetic": m["n_synthetic"], "steps": m["steps"]})
    pool = load_imageset(Path(inputs["split"]) / "pool.npz")
    summary = write_report(out, rows, {"real": pool.images[:64]})
    return {"cells": len(rows), "summary": summary}
