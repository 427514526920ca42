"""Validation error of the mixed classify cells in a workspace: each cell's model scored on the
split's held-out training digits (never trained on by any cell, and not the MNIST test set), as a
markdown table by mixture, budget and synthetic fraction, mean over seeds. Run variants of a study
with `--set experiment.synthetic_fraction=F --name ...` into one workspace first; choose the
fraction on this table.

    python benchmarks/validation_error.py --workdir runs/mnist-sweep [--budgets 55 385]
        [--mixtures real+font real+gan]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--budgets", type=int, nargs="*", help="only these budgets (default: all)")
    parser.add_argument("--mixtures", nargs="*", help="only these mixtures (default: all mixed ones)")
    args = parser.parse_args()
    from classifiers.digits import error_rate, load_model
    from synthgap.data.imageset import load_imageset

    splits = sorted((args.workdir / "cache" / "split").glob("*/holdout.npz"))
    if len(splits) != 1:
        print(f"error: {args.workdir} needs exactly one cached split (found {len(splits)}); "
              "give the workspace of one study", file=sys.stderr)
        return 2
    holdout = load_imageset(splits[0])
    torch.set_num_threads(1)
    found = defaultdict(list)  # (mixture, budget, fraction) -> [(seed, validation, test)]
    for meta_path in sorted((args.workdir / "cache" / "classify").glob("*/meta.json")):
        meta = json.loads(meta_path.read_text())
        p = meta["params"]
        if ("synthetic_fraction" not in p or (args.budgets and p["budget"] not in args.budgets)
                or (args.mixtures and p["mixture"] not in args.mixtures)):
            continue
        model = load_model(meta_path.parent / "model.safetensors", p["width"])
        error = error_rate(model, holdout.images, holdout.labels, torch.device("cpu"))
        found[(p["mixture"], p["budget"], p["synthetic_fraction"])].append(
            (p["seed"], error, meta["metrics"]["test_error"]))
    if not found:
        print(f"error: no mixed classify cells in {args.workdir}/cache", file=sys.stderr)
        return 2
    print(f"Validation: the split's {len(holdout.labels):,} held-out training digits. "
          "Mean over seeds; the test error (MNIST test set) for reference only.\n")
    print("| mixture | budget | synthetic fraction | seeds | validation error | test error |")
    print("|---|---:|---:|---:|---:|---:|")
    for (mixture, budget, fraction), rows in sorted(found.items()):
        print(f"| {mixture} | {budget:,} | {fraction:g} | {len(rows)} | "
              f"{np.mean([v for _, v, _ in rows]):.4f} | {np.mean([t for _, _, t in rows]):.4f} |")
    by_fraction = defaultdict(list)
    for (_, _, fraction), rows in found.items():
        by_fraction[fraction].append(np.mean([v for _, v, _ in rows]))
    print("\n| synthetic fraction | mean validation error over its mixtures and budgets above |")
    print("|---:|---:|")
    for fraction, values in sorted(by_fraction.items()):
        print(f"| {fraction:g} | {np.mean(values):.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
