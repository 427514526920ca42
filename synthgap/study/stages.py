"""The stage functions of the study: each reads its inputs (folders of upstream stages), turns the
dict form of its settings in `params` back into their dataclass, calls the library, and writes its
files into `out`. A stage's key holds the code its function uses, with every project module it
imports (synthgap/runner/codehash.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from classifiers.digits import load_model, save_model
from synthgap.data.imageset import ImageSet, load_imageset, save_imageset
from synthgap.devices import resolve_device

MIXTURES = ("real", "font", "gan", "tone", "real+font", "real+gan", "real+tone", "real+composite",
            "real+font:shuffled", "real+gan:shuffled", "real+tone:shuffled")
# The files each kind of stage writes: the runner checks them before it marks a stage done, and a
# downstream stage reads an upstream's first one.
OUTS = {"mnist": ("train.npz", "test.npz"), "split": ("pool.npz", "holdout.npz"),
        "budget": ("budget.npz",), "render_fonts": ("fonts.npz", "fonts.json"),
        "render_composites": ("composites.npz",), "classify": ("model.safetensors",),
        "oracle": ("model.safetensors",), "train_refiner": ("refiner.safetensors", "losses.json"),
        "refine": ("refined.npz",), "tone": ("tone.npz", "curve.json"), "gap": (),
        "report": ("results.csv", "summary.csv", "paired.csv", "results.md")}
SYNTHETIC_FILES = {"font": OUTS["render_fonts"][0], "gan": OUTS["refine"][0],
                   "tone": OUTS["tone"][0]}


def mnist(params, inputs, out, ctx):
    """Read and check MNIST; write train.npz and test.npz."""
    from synthgap.data.mnist import load_mnist

    d = load_mnist(ctx.data_dir)
    for split in ("train", "test"):
        images = d[f"{split}_images"][:, None]
        save_imageset(ImageSet(images, d[f"{split}_labels"], {"source": f"mnist-{split}"}),
                      out / f"{split}.npz")
    return {"train": len(d["train_labels"]), "test": len(d["test_labels"])}


def split(params, inputs, out, ctx):
    """Stratified random pool / holdout split of MNIST train."""
    from synthgap.data.splits import pool_holdout

    train = load_imageset(Path(inputs["mnist"]) / "train.npz")
    pool, holdout = pool_holdout(train.labels, params["holdout"], params["seed"])
    save_imageset(train.subset(pool, source="mnist-pool"), out / "pool.npz")
    save_imageset(train.subset(holdout, source="mnist-holdout"), out / "holdout.npz")
    return {"pool": len(pool), "holdout": len(holdout)}


def budget(params, inputs, out, ctx):
    """The seed's nested, stratified budget of real images from the pool."""
    from synthgap.data.splits import nested_budget

    pool = load_imageset(Path(inputs["split"]) / "pool.npz")
    index = nested_budget(pool.labels, params["budget"], params["seed"])
    save_imageset(pool.subset(index, source="mnist-budget", budget=params["budget"],
                              seed=params["seed"]), out / "budget.npz")
    return {"images": len(index), "per_class": [int((pool.labels[index] == c).sum())
                                                for c in range(10)]}


def render_fonts(params, inputs, out, ctx):
    """`total` class-balanced font renders with the configured augmentation; fonts.npz + fonts.json."""
    from renderers.fontfiles import discover
    from renderers.fonts import FontsConfig, render_digits

    cfg = FontsConfig(**params["fonts"])
    checks = discover(cfg.folders, exclude=cfg.exclude)
    fonts = [c for c in checks if c.ok]
    images, labels = render_digits([c.path for c in fonts], params["total"], cfg.seed, cfg,
                                   workers=ctx.workers(), progress=ctx.report)
    save_imageset(ImageSet(images, labels, {"source": "font", **params["fonts"],
                                            "total": params["total"]}), out / "fonts.npz")
    used = [{"file": c.path, "family": c.family, "sha256": c.sha256} for c in fonts]
    rejected = [{"file": c.path, "reason": c.reason} for c in checks if not c.ok]
    (out / "fonts.json").write_text(json.dumps({"used": used, "rejected": rejected}, indent=2))
    return {"images": len(labels), "fonts": used, "rejected": len(rejected)}


def render_composites(params, inputs, out, ctx):
    """Cut-outs of font renders pasted on plain canvases with one blending mode."""
    from renderers.composite import CompositesConfig, composite

    cfg = CompositesConfig(**params["composites"])
    fonts = load_imageset(Path(inputs["fonts"]) / "fonts.npz")
    images, labels = composite(fonts.images, fonts.labels, cfg.count, params["mode"], cfg.seed, cfg)
    save_imageset(ImageSet(images, labels, {"source": f"composite-{params['mode']}",
                                            **params["composites"], "mode": params["mode"]}),
                  out / "composites.npz")
    return {"images": len(labels)}


def mixture_sources(params, inputs, real, load=load_imageset):
    """[(images, labels, batch fraction)] of a classify cell's mixture (`load` reads an ImageSet).

    `real+X` draws each batch's `synthetic_fraction` from X's images; with `mixing = "concat"` the
    real and X's images are one pool, drawn alike (each batch (T - b)/T synthetic on average; with
    k refiner variants k(T - b)/(k(T - b) + b), as many images as there are). `X:shuffled` is X's
    images with labels drawn uniformly at random, fixed by the seed: the control that has the
    images and no digit knowledge."""
    mixture, f = params["mixture"], params["synthetic_fraction"]
    if mixture == "real":
        return [(real.images, real.labels, 1.0)]
    base, _, control = mixture.partition(":")
    kind = base.removeprefix("real+")
    if kind in SYNTHETIC_FILES:
        # the first T - b renders; refined sets of k variants hold k copies of the renders, one
        # after the other, and the cell takes the same renders' k variants
        renders = load(Path(inputs["synthetic"]) / SYNTHETIC_FILES[kind])
        n, k = params["total"] - params["budget"], params.get("variants", 1)
        per_variant = len(renders) // k
        if n < 1 or n > per_variant:
            raise ValueError(f"{kind} mixture needs T - b = {n} images, have {per_variant}")
        synthetic = renders.subset(slice(n) if k == 1 else np.concatenate(
            [np.arange(v * per_variant, v * per_variant + n) for v in range(k)]))
    elif kind == "composite":
        synthetic = load(Path(inputs["synthetic"]) / "composites.npz")
    else:
        raise ValueError(f"unknown mixture {mixture!r}; known: {', '.join(MIXTURES)}")
    images, labels = synthetic.images, synthetic.labels
    if control == "shuffled":
        labels = shuffled_labels(len(labels), params["seed"])
    elif control:
        raise ValueError(f"unknown control {control!r} of mixture {mixture!r}; known: shuffled")
    if base == kind:
        return [(images, labels, 1.0)]
    if params.get("mixing") == "concat":
        return [(np.concatenate([real.images, images]), np.concatenate([real.labels, labels]), 1.0)]
    return [(real.images, real.labels, 1 - f), (images, labels, f)]


def shuffled_labels(n: int, seed: int) -> np.ndarray:
    """n labels drawn uniformly from the ten digits, the same for a seed (the label control)."""
    return np.random.default_rng([seed, 10]).integers(0, 10, n).astype(np.int64)


def classify(params, inputs, out, ctx):
    """Train the digit CNN on the cell's mixture; test error on the MNIST test set."""
    return classify_cells([params], [inputs], [out], ctx)[0]


def classify_cells(params_list, inputs_list, outs, ctx):
    """Classify cells trained at once as one grouped model (`[classifier] group`), each written
    as if trained alone: its model and its test error."""
    import functools

    from classifiers.digits import ClassifierConfig, error_rate, train_classifiers

    device = resolve_device(ctx.device)
    load = functools.lru_cache(maxsize=None)(load_imageset)  # a set shared by cells is read once
    if any(p["classifier"] != params_list[0]["classifier"] for p in params_list):
        raise ValueError("the cells of a group must share their [classifier] settings")
    cfg = ClassifierConfig(**params_list[0]["classifier"])
    cells, reals = [], []
    for params, inputs in zip(params_list, inputs_list):
        reals.append(load(Path(inputs["budget"]) / "budget.npz"))
        cells.append((mixture_sources(params, inputs, reals[-1], load), params["seed"]))
    test = load(Path(inputs_list[0]["mnist"]) / "test.npz")
    models = train_classifiers(cells, cfg, device, ctx.report, ctx.precision)
    results = []
    for params, out, model, (sources, _), real in zip(params_list, outs, models, cells, reals):
        save_model(model, out / "model.safetensors")
        n_real = len(real) if "real" in params["mixture"] else 0
        results.append({"test_error": error_rate(model, test.images, test.labels, device),
                        "n_real": n_real,
                        "n_synthetic": sum(len(s[0]) for s in sources) - n_real,
                        "steps": cfg.steps, "device": str(device)})
    return results


def oracle(params, inputs, out, ctx):
    """The evaluation-only classifier, trained on the whole pool: judges label retention and
    gives the features of the Fréchet distance. Never a training source."""
    from classifiers.digits import ClassifierConfig, error_rate, train_classifier

    device = resolve_device(ctx.device)
    pool = load_imageset(Path(inputs["split"]) / "pool.npz")
    test = load_imageset(Path(inputs["mnist"]) / "test.npz")
    cfg = ClassifierConfig(**params["classifier"])
    model = train_classifier([(pool.images, pool.labels, 1.0)], cfg, params["seed"], device,
                             ctx.report, ctx.precision)
    save_model(model, out / "model.safetensors")
    return {"test_error": error_rate(model, test.images, test.labels, device), "images": len(pool)}


def train_refiner(params, inputs, out, ctx):
    """CycleGAN-style refiner from the budget's real images (labels unused) and the font renders;
    the semantic-consistency classifier is trained here on the labelled renders only."""
    import time

    from torch.utils.tensorboard import SummaryWriter

    from gan.config import RefinerConfig
    from gan.train import semantic_classifier, train_refiner as train
    from gan.weights import save_refiner

    device = resolve_device(ctx.device)
    real = load_imageset(Path(inputs["budget"]) / "budget.npz")
    fonts = load_imageset(Path(inputs["synthetic"]) / "fonts.npz")
    cfg = RefinerConfig(**params["refiner"])
    val = None
    if cfg.val_images > 0:  # the split's held-out real digits, never trained on
        holdout = load_imageset(Path(inputs["split"]) / "holdout.npz")
        pick = np.random.default_rng(params["seed"]).permutation(len(holdout.labels))
        pick = np.sort(pick[:cfg.val_images])
        val = (holdout.images[pick], holdout.labels[pick])
    classifier = None
    if cfg.semantic(fonts.labels):
        classifier = semantic_classifier(fonts.images, fonts.labels, cfg, params["seed"], device,
                                         precision=ctx.precision)
    start = time.time()
    writer = SummaryWriter(str(out / "tb"))
    nets, history = train(real.images, fonts.images, fonts.labels, cfg, params["seed"], device,
                          ctx.report, writer, classifier, real.labels, val=val,
                          precision=ctx.precision)
    writer.close()
    seconds = time.time() - start
    save_refiner(nets, out / "refiner.safetensors", cfg, real.images.shape[1])
    (out / "losses.json").write_text(json.dumps(history))
    return {"steps_per_second": cfg.steps / seconds, "train_seconds": seconds,
            "real_images": len(real), "final_losses": history[-1] if history else {},
            "d_accuracy": [h["d_accuracy"] for h in history if "d_accuracy" in h],
            "d_accuracy_val": [h["d_accuracy_val"] for h in history if "d_accuracy_val" in h],
            "field_px": history[-1].get("field_px", 0.0) if history else 0.0}


def retention(oracle, renders: ImageSet, changed: np.ndarray, device) -> dict:
    """How well the oracle still reads images made from the renders (refined or toned; a whole
    number of copies of the renders, one after the other): label retention = its accuracy on
    them against the render labels (and, for reference, on the renders themselves); label agreement
    = how often it reads a changed image as it reads its render, which counts flips by the change
    alone; retention of read renders = the retention over the renders it reads right, which takes
    the renderer's share out."""
    from classifiers.digits import predict

    copies = len(changed) // len(renders)
    oracle = oracle.to(device)
    before = predict(oracle, renders.images, device).argmax(1)
    after = predict(oracle, changed, device).argmax(1)
    labels, before = np.tile(renders.labels, copies), np.tile(before, copies)
    read = before == labels
    return {"label_retention": float((after == labels).mean()),
            "retention_of_read_renders": float((after[read] == labels[read]).mean()),
            "oracle_accuracy_on_renders": float(read.mean()),
            "label_agreement": float((after == before).mean()),
            "mean_abs_change": float(abs(changed.astype(float) - np.tile(
                renders.images, (copies, 1, 1, 1))).mean() / 255)}


def refine(params, inputs, out, ctx):
    """G applied to every font render (`variants` times, each with its own noise), with
    `match_levels` each one's grey levels then matched to a real budget image's of like ink; the
    oracle's label retention on the refined images."""
    from gan.refine import refine as apply
    from gan.weights import load_generator

    device = resolve_device(ctx.device)
    fonts = load_imageset(Path(inputs["synthetic"]) / "fonts.npz")
    G = load_generator(Path(inputs["refiner"]) / "refiner.safetensors").to(device)
    images = apply(G, fonts.images, device, progress=ctx.report, variants=params["variants"],
                   seed=params["seed"],
                   channels_last=ctx.precision is not None and ctx.precision.channels_last)
    labels = np.tile(fonts.labels, params["variants"])
    if params["match_levels"]:  # each image's grey levels a real budget image's of its digit
        from renderers.tone import match_to_real
        real = load_imageset(Path(inputs["budget"]) / "budget.npz")
        images = match_to_real(images, labels, real.images, real.labels, params["seed"],
                               params["match_nearest"])
    save_imageset(ImageSet(images, labels, {"source": f"refined-b{params['budget']}", **params}),
                  out / "refined.npz")
    oracle = load_model(Path(inputs["oracle"]) / "model.safetensors", params["oracle_width"])
    return retention(oracle, fonts, images, device)


def tone(params, inputs, out, ctx):
    """The tone-curve baseline: every font render through the monotone lookup table that matches
    its grey levels to the budget's real images (renderers/tone.py), with `match_levels` then each
    one's to a real budget image's of its digit; the oracle's retention."""
    from renderers.tone import apply_tone_curve, fit_tone_curve, match_to_real

    device = resolve_device(ctx.device)
    fonts = load_imageset(Path(inputs["synthetic"]) / "fonts.npz")
    real = load_imageset(Path(inputs["budget"]) / "budget.npz")
    curve = fit_tone_curve(fonts.images, real.images)
    images = apply_tone_curve(fonts.images, curve)
    if params["match_levels"]:
        images = match_to_real(images, fonts.labels, real.images, real.labels, params["seed"],
                               params["match_nearest"])
    save_imageset(ImageSet(images, fonts.labels, {"source": f"tone-b{params['budget']}", **params}),
                  out / "tone.npz")
    (out / "curve.json").write_text(json.dumps(curve.tolist()))
    oracle = load_model(Path(inputs["oracle"]) / "model.safetensors", params["oracle_width"])
    return retention(oracle, fonts, images, device)


def gap(params, inputs, out, ctx):
    """The gap instruments on one source against the real holdout: C2ST on pixels and on Fourier
    log-magnitude, Deep SVDD trained on holdout images only, and the Fréchet distance in the
    oracle's features. The real-vs-real control compares the holdout with pool images."""
    from classifiers.detector import GapConfig, c2st, deep_svdd
    from classifiers.frechet import features, frechet_distance

    device = resolve_device(ctx.device)
    cfg = GapConfig(**params["gap"])
    holdout = load_imageset(Path(inputs["split"]) / "holdout.npz").images
    rng = np.random.default_rng(cfg.seed)
    other = load_imageset(Path(inputs["source"]) / params["file"]).images
    other = other[rng.permutation(len(other))[:cfg.samples]]
    real = holdout[rng.permutation(len(holdout))[:cfg.samples]]
    rows = [c2st(real, other, kind, cfg, cfg.seed, device, ctx.report, ctx.precision)
            for kind in cfg.instruments if kind != "svdd"]
    half = len(real) // 2  # SVDD learns from one half of the real images, is tested on the other
    if "svdd" in cfg.instruments:
        rows.append(deep_svdd(real[:half], real[half:], other[len(other) // 2:], cfg, cfg.seed,
                              device, ctx.report, precision=ctx.precision))
    oracle = load_model(Path(inputs["oracle"]) / "model.safetensors", params["oracle_width"])
    fd = frechet_distance(features(oracle, real, device), features(oracle, other, device))
    return {"rows": rows, "frechet": fd, "n_real": len(real), "n_source": len(other)}


def report(params, inputs, out, ctx):
    """results.csv, summary.csv, plots and TensorBoard from every classify cell; with regimes,
    a cell's rows under every regime it belongs to, and regimes.md."""
    from synthgap.study.report import write_report

    regimes = params.get("regimes", [])
    rows, machines = [], set()
    for name, folder in inputs.items():
        if not name.startswith("classify/"):
            continue
        meta = json.loads((Path(folder) / "meta.json").read_text())
        p, m = meta["params"], meta["metrics"]
        machines.add(f"{meta.get('ran', {}).get('device_name', 'an unnamed device')}, torch "
                     f"{meta['versions'].get('torch', '?')}")
        row = {"mixture": p["mixture"], "budget": p["budget"], "seed": p["seed"],
               "test_error": m["test_error"], "n_real": m["n_real"],
               "n_synthetic": m["n_synthetic"], "steps": m["steps"],
               "synthetic_fraction": p["synthetic_fraction"]}
        rows += [{"regime": r, **row} for r in regimes if in_regime(p.get("regime", {}), r)] or [row]
    rows.sort(key=lambda r: regimes.index(r["regime"]) if regimes else 0)  # the config's order
    grids = {"real": load_imageset(Path(inputs["split"]) / OUTS["split"][0]).images[:64]}
    refiners, tones = {}, {}  # budget (with regimes (renderer, budget)) -> metrics of the first
    histories = {}            # seed's refine / tone stage; train_refiner stage -> its losses
    for name, folder in inputs.items():
        if name.startswith(("render_", "refine/", "tone/")):  # a sample of every synthetic source
            s = load_imageset(Path(folder) / OUTS[name.split("/")[0]][0])
            renderer = json.loads((Path(folder) / "meta.json").read_text())["params"].get("renderer")
            grids.setdefault(s.meta["source"] + (f"-{renderer}" if renderer else ""), s.images[:64])
        if name.startswith(("refine/", "tone/")):
            meta = json.loads((Path(folder) / "meta.json").read_text())
            found = refiners if name.startswith("refine/") else tones
            at = meta["params"]["budget"]
            found.setdefault((meta["params"]["renderer"], at) if regimes else at, meta["metrics"])
        if name.startswith("train_refiner/") and (Path(folder) / "tb").is_dir():
            shutil.copytree(Path(folder) / "tb",
                            out / "tb" / name.replace("train_refiner/", "refiner-").replace("/", "-"))
            histories[name] = json.loads((Path(folder) / "losses.json").read_text())
    gaps = []
    for name, folder in inputs.items():
        if name.startswith("gap/"):
            meta = json.loads((Path(folder) / "meta.json").read_text())
            p, m = meta["params"], meta["metrics"]
            kept = {"refined": refiners, "tone": tones}.get(p["source"], {})
            at = (p.get("renderer"), p["budget"]) if regimes else p["budget"]
            retention = kept.get(at, {}).get("label_retention", "")
            gaps += [{**r, "source": p["source"], "budget": p["budget"] or "", "frechet": m["frechet"],
                      "label_retention": retention,
                      **({"renderer": p.get("renderer", "")} if regimes else {})} for r in m["rows"]]
    summary, worths = write_report(out, rows, grids, refiners, gaps, histories,
                                   params["experiment"], tones, sorted(machines))
    if regimes:
        from synthgap.study.regimes import write_regimes

        write_regimes(out, rows, gaps, regimes, params["experiment"], sorted(machines), worths)
    return {"cells": len(rows), "summary": summary, "gap_rows": len(gaps),
            "label_retention": {"/".join(map(str, at)) if regimes else str(at): m["label_retention"]
                                for at, m in sorted(refiners.items())}}


def in_regime(factors: dict, regime: str) -> bool:
    """Whether a cell with these regime factors belongs to the regime "renderer/classifier/mixing"."""
    named = dict(zip(("renderer", "classifier", "mixing"), regime.split("/")))
    return all(named[k] == v for k, v in factors.items())
