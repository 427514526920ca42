"""How legibly each font renders: every usable font (those `fonts.exclude` leaves out too) rendered
alone with the study's rendering knobs (FontsConfig's defaults), and read by the oracle of a
workspace (a classifier trained on pool digits, never on the MNIST test set): its accuracy on each
font's renders, overall and per digit, as a markdown table. A refined render can keep its label
only as far as the oracle reads the render itself, so this bounds label retention.

    python benchmarks/font_legibility.py --workdir runs/mnist-sweep [--per-font 2000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

import cached  # benchmarks/cached.py, beside this script


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--per-font", type=int, default=2000, help="renders a font (default 2000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from classifiers.digits import predict
    from renderers.fontfiles import EXCLUDE, discover
    from renderers.fonts import FontsConfig, render_digits

    oracle = cached.oracle(args.workdir)
    torch.set_num_threads(2)
    fonts = [c for c in discover(exclude=[]) if c.ok]
    print(f"{args.per_font:,} renders a font (seed {args.seed}), FontsConfig's knobs; the oracle's "
          f"accuracy, overall and per digit. Left out by default: {', '.join(EXCLUDE)}.\n")
    print("| font | file | left out | accuracy | " + " | ".join(map(str, range(10))) + " |")
    print("|---|---|---|---:|" + "---:|" * 10)
    hits = {}
    for c in fonts:
        images, labels = render_digits([c.path], args.per_font, args.seed, FontsConfig())
        ok = predict(oracle, images, torch.device("cpu")).argmax(1) == labels
        stem = Path(c.path).stem
        hits[stem] = ok
        per = " | ".join(f"{ok[labels == d].mean():.3f}" for d in range(10))
        print(f"| {c.family} | {stem} | {'yes' if stem in EXCLUDE else ''} | {ok.mean():.4f} | {per} |",
              flush=True)
    used = np.concatenate([v for k, v in hits.items() if k not in EXCLUDE])
    every = np.concatenate(list(hits.values()))
    print(f"\nAll {len(hits)} fonts: {every.mean():.4f}; those used by default: {used.mean():.4f}.")
    return 0


if __name__ == "__main__":
    sys.exit(cached.run(main))
