"""The stage functions of the experiments: each reads its inputs (folders of upstream stages),
calls the library, and writes its files into `out`. Heavy imports stay inside the functions so the
runner can plan without loading torch."""

from __future__ import annotations

import json
from pathlib import Path

from data.imageset import ImageSet, load_imageset, save_imageset

MIXTURES = ("real", "font", "real+font", "real+composite")


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


def render_fonts(params, inputs, out, ctx):
    """`total` class-balanced font renders with the configured augmentation; fonts.npz + fonts.json."""
    from renderers.fonts import discover, render_digits

    checks = discover(params["folders"])
    fonts = [c for c in checks if c.ok]
    knobs = {k: v for k, v in params.items() if k not in ("folders", "total", "seed")}
    images, labels = render_digits([c.path for c in fonts], params["total"], params["seed"], knobs,
                                   workers=ctx.workers(), progress=ctx.report)
    save_imageset(ImageSet(images, labels, {"source": "font", **params}), out / "fonts.npz")
    used = [{"file": c.path, "family": c.family, "sha256": c.sha256} for c in fonts]
    rejected = [{"file": c.path, "reason": c.reason} for c in checks if not c.ok]
    (out / "fonts.json").write_text(json.dumps({"used": used, "rejected": rejected}, indent=2))
    return {"images": len(labels), "fonts": used, "rejected": len(rejected)}


def render_composites(params, inputs, out, ctx):
    """Cut-outs of font renders pasted on plain canvases with one blending mode."""
    from renderers.composite import composite

    fonts = load_imageset(Path(inputs["fonts"]) / "fonts.npz")
    knobs = {k: v for k, v in params.items() if k not in ("mode", "count", "seed")}
    images, labels = composite(fonts.images, fonts.labels, params["count"], params["mode"],
                               params["seed"], knobs)
    save_imageset(ImageSet(images, labels, {"source": f"composite-{params['mode']}", **params}),
                  out / "composites.npz")
    return {"images": len(labels)}


def mixture_sources(params, inputs, real):
    """[(images, labels, batch fraction)] of a classify cell's mixture."""
    mixture, f = params["mixture"], params.get("synthetic_fraction", 0.0)
    if mixture == "real":
        return [(real.images, real.labels, 1.0)]
    if mixture in ("font", "real+font"):
        fonts = load_imageset(Path(inputs["synthetic"]) / "fonts.npz")
        n = params["total"] - params["budget"]
        if n < 1 or n > len(fonts):
            raise ValueError(f"font mixture needs T - b = {n} renders, have {len(fonts)}")
        synthetic = fonts.subset(slice(0, n))
    elif mixture == "real+composite":
        synthetic = load_imageset(Path(inputs["synthetic"]) / "composites.npz")
    else:
        raise ValueError(f"unknown mixture {mixture!r}; known: {', '.join(MIXTURES)}")
    if mixture == "font":
        return [(synthetic.images, synthetic.labels, 1.0)]
    return [(real.images, real.labels, 1 - f), (synthetic.images, synthetic.labels, f)]


def classify(params, inputs, out, ctx):
    """Train the digit CNN on the cell's mixture; test error on the MNIST test set."""
    from safetensors.torch import save_file

    from classifiers.digits import DEFAULTS, error_rate, resolve_device, train_classifier

    device = resolve_device(ctx.device)
    real = load_imageset(Path(inputs["budget"]) / "budget.npz")
    test = load_imageset(Path(inputs["mnist"]) / "test.npz")
    sources = mixture_sources(params, inputs, real)
    cfg = {k: v for k, v in params.items() if k in DEFAULTS}
    model = train_classifier(sources, cfg, params["seed"], device, ctx.report)
    save_file({k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()},
              str(out / "model.safetensors"))
    err = error_rate(model, test.images, test.labels, device)
    n_real = len(real) if "real" in params["mixture"] else 0
    return {"test_error": err, "n_real": n_real, "n_synthetic": sum(len(s[0]) for s in sources) - n_real,
            "steps": params["steps"], "device": str(device)}


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
    grids = {"real": load_imageset(Path(inputs["split"]) / "pool.npz").images[:64]}
    for name, folder in inputs.items():
        for file in ("fonts.npz", "composites.npz"):
            if (Path(folder) / file).is_file():
                s = load_imageset(Path(folder) / file)
                grids[s.meta["source"]] = s.images[:64]
    summary = write_report(out, rows, grids)
    return {"cells": len(rows), "summary": summary}
