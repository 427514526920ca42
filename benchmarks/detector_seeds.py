"""How much a two-sample test's AUC moves with the detector's own seed: for cached image sources in
a workspace, the C2ST of the `gap` stage (same samples: 10,000 held-out training digits a side and
as many of the source's images, drawn with the gap seed) run with detector seeds 0..k-1 (each draws
the train/test halves, the initial weights and the batches), for each view and number of training
steps; mean, standard deviation and range of the AUC, as a markdown table. The DeLong interval a `gap` row carries covers the test half's sampling only; this is the
spread from training the detector, which two sources' AUCs must differ by more than.

    python benchmarks/detector_seeds.py --workdir runs/mnist-sweep \
        --sources refine/7e9e tone/89b3 [--views pixel grey] [--seeds 8] [--steps 400 1600]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

import cached  # benchmarks/cached.py, beside this script


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--sources", nargs="+", required=True,
                        help="cached stages as KIND/KEY-PREFIX, e.g. refine/7e9e tone/89b3")
    parser.add_argument("--views", nargs="+", default=["pixel"],
                        choices=["pixel", "fourier", "grey"], help="C2ST views (default: pixel)")
    parser.add_argument("--seeds", type=int, default=8, help="detector seeds 0..k-1 (default 8)")
    parser.add_argument("--steps", type=int, nargs="+", default=[400],
                        help="detector training steps (default: the gap stage's 400)")
    parser.add_argument("--samples", type=int, default=10000, help="images a side (default 10000)")
    args = parser.parse_args()
    from classifiers.detector import GapConfig, c2st
    from synthgap.data.imageset import load_imageset

    cache = args.workdir / "cache"
    found = {}
    holdout = cached.holdout(args.workdir).images
    for source in args.sources:
        kind, _, prefix = source.partition("/")
        hits = sorted(p for p in (cache / kind).glob(f"{prefix}*/*.npz")) if prefix else []
        if len(hits) != 1:
            raise LookupError(f"{source!r} matches {len(hits)} cached image files in {cache}; "
                              "give KIND/KEY-PREFIX of one stage (ls the cache's folders)")
        found[source] = hits[0]
    torch.set_num_threads(2)
    seed = GapConfig().seed
    print(f"C2ST AUC over detector seeds 0–{args.seeds - 1}; {args.samples:,} images a side, drawn "
          f"as the gap stage draws them (seed {seed}); half of each side trains, half tests.\n")
    print("| source | view | steps | mean AUC | sd | min – max | s a run |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for source, path in found.items():
        rng = np.random.default_rng(seed)  # the gap stage's draw: the source first, then the real
        other = load_imageset(path).images
        other = other[rng.permutation(len(other))[:args.samples]]
        real = holdout[rng.permutation(len(holdout))[:args.samples]]
        for view in args.views:
            for steps in args.steps:
                start = time.perf_counter()
                aucs = np.array([c2st(real, other, view, GapConfig(steps=steps), k)["auc"]
                                 for k in range(args.seeds)])
                each = (time.perf_counter() - start) / args.seeds
                print(f"| {source} | {view} | {steps} | {aucs.mean():.4f} | "
                      f"{aucs.std(ddof=1) if len(aucs) > 1 else 0:.4f} | "
                      f"{aucs.min():.4f} – {aucs.max():.4f} | {each:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(cached.run(main))
