"""Validation error of the classify cells in a workspace: each cell's model scored on the split's
held-out training digits (never trained on by any cell, and not the MNIST test set), as a markdown
table by mixture, budget, synthetic fraction and synthetic source, mean over seeds and its standard
deviation. Run variants of a study with `--set KEY=VALUE --name ...` into one workspace first (a
synthetic fraction F at every budget is `--set experiment.synthetic_fraction=F
--set 'experiment.synthetic_fraction_at={}'`; or a renderer's knob or code, whose renders then have
another cache key); choose on this table.
`--sources` keeps the cells whose synthetic source's cache key starts with one of the given prefixes.

    python benchmarks/validation_error.py --workdir runs/mnist-sweep [--budgets 55 385]
        [--mixtures real+font real+gan] [--sources 81785630 5636f50f] [--per-class]

Without --mixtures, the mixed cells alone; --per-class adds each digit's validation error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

import cached  # benchmarks/cached.py, beside this script


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--budgets", type=int, nargs="*", help="only these budgets (default: all)")
    parser.add_argument("--mixtures", nargs="*", help="only these mixtures (default: all mixed ones)")
    parser.add_argument("--sources", nargs="*",
                        help="only cells whose synthetic source's cache key starts so (default: all)")
    parser.add_argument("--per-class", action="store_true", help="each digit's validation error too")
    args = parser.parse_args()
    from classifiers.digits import load_model, predict

    holdout = cached.holdout(args.workdir)
    labels = np.asarray(holdout.labels)
    torch.set_num_threads(1)
    # (mixture, budget, fraction, synthetic source's key) -> [(validation, per digit, test)]
    found = defaultdict(list)
    for meta_path in sorted((args.workdir / "cache" / "classify").glob("*/meta.json")):
        meta = json.loads(meta_path.read_text())
        p = meta["params"]
        wanted = p["mixture"] in args.mixtures if args.mixtures else p["mixture"].startswith("real+")
        source = meta.get("upstream", {}).get("synthetic", "")[:8] or "-"
        if (not wanted or (args.budgets and p["budget"] not in args.budgets)
                or (args.sources and not source.startswith(tuple(args.sources)))):
            continue
        model = load_model(meta_path.parent / "model.safetensors", p["classifier"]["width"])
        wrong = predict(model, holdout.images, torch.device("cpu")).argmax(1) != labels
        per_digit = [wrong[labels == d].mean() for d in range(10)]
        found[(p["mixture"], p["budget"], p["synthetic_fraction"], source)].append(
            (wrong.mean(), per_digit, meta["metrics"]["test_error"]))
    if not found:
        print(f"error: no matching classify cells in {args.workdir}/cache", file=sys.stderr)
        return 2
    print(f"Validation: the split's {len(labels):,} held-out training digits. "
          "Mean over seeds; the test error (MNIST test set) for reference only.\n")
    digits = "".join(f" {d} |" for d in range(10)) if args.per_class else ""
    print(f"| mixture | budget | synthetic fraction | synthetic source | seeds | validation error "
          f"| its sd over seeds | test error |{digits}")
    print("|---|---:|---:|---|---:|---:|---:|---:|" + "---:|" * (10 if args.per_class else 0))
    for (mixture, budget, fraction, source), rows in sorted(found.items()):
        per = np.mean([d for _, d, _ in rows], 0)
        extra = "".join(f" {e:.3f} |" for e in per) if args.per_class else ""
        val = [v for v, _, _ in rows]
        sd = f"{np.std(val, ddof=1):.4f}" if len(val) > 1 else "–"
        print(f"| {mixture} | {budget:,} | {fraction:g} | {source} | {len(rows)} | "
              f"{np.mean(val):.4f} | {sd} | {np.mean([t for _, _, t in rows]):.4f} |{extra}")
    by_fraction = defaultdict(list)  # (fraction, budget) -> each mixture's mean
    for (_, budget, fraction, _), rows in found.items():
        by_fraction[fraction, budget].append(np.mean([v for v, _, _ in rows]))
    fractions = sorted({f for f, _ in by_fraction})
    budgets = sorted({b for _, b in by_fraction})
    if len(fractions) > 1:
        print("\nMean validation error over the mixtures above, by synthetic fraction and budget.\n")
        print("| synthetic fraction | " + " | ".join(f"{b:,}" for b in budgets) + " |")
        print("|---:|" + "---:|" * len(budgets))
        for f in fractions:
            cells = [f"{np.mean(by_fraction[f, b]):.4f}" if (f, b) in by_fraction else "–"
                     for b in budgets]
            print(f"| {f:g} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(cached.run(main))
