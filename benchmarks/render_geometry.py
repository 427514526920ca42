"""Size and slant of the font renders in a workspace against the real digits: for the split's
held-out training digits and for every cached `render_fonts` output, the height and width of the
ink's bounding box (pixels above 100), the ink's spread across and down (root second moments), its
slant (the shear that would make it upright, positive when the top leans right), the share of images
with more than 5 ink pixels within 3 pixels of the border, and, where the workspace holds an oracle,
the Fréchet distance to the held-out digits in the oracle's features.
Quantiles 10 / 50 / 90 %, as a markdown table. Run render variants into one workspace first
(`pipeline run ... --set fonts.KNOB=VALUE --name ...`).

    python benchmarks/render_geometry.py --workdir runs/mnist-sweep [--samples 5000] [--renders KEY ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

import cached  # benchmarks/cached.py, beside this script


def geometry(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per image: bounding-box height and width, ink spread across and down, slant, and whether
    more than 5 ink pixels lie within 3 pixels of the border."""
    from renderers.geometry import ink_box, ink_moments

    height, width, rim = ink_box(images)
    across, down, slant = ink_moments(images)
    return {"height": height, "width": width, "spread across": across, "spread down": down,
            "slant": slant, "at the border": rim > 5}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--samples", type=int, default=5000, help="images a side (default 5000)")
    parser.add_argument("--renders", nargs="*", default=[],
                        help="only the render_fonts stages whose cache keys start so (default: all)")
    args = parser.parse_args()
    from synthgap.data.imageset import load_imageset
    from classifiers.frechet import features, frechet_distance

    renders = [p for p in sorted((args.workdir / "cache" / "render_fonts").glob("*/fonts.npz"))
               if not args.renders or p.parent.name.startswith(tuple(args.renders))]
    real = cached.holdout(args.workdir).images[:args.samples]
    if not renders:
        raise LookupError(f"{args.workdir} holds no cached render_fonts stage"
                          + (f" whose key starts {' or '.join(args.renders)}" if args.renders else "")
                          + "; give the workspace of a study that rendered fonts")
    torch.set_num_threads(2)
    try:  # the Fréchet column where the workspace holds an oracle
        oracle = cached.oracle(args.workdir)
        feats = features(oracle, real, torch.device("cpu"))
    except LookupError:
        oracle = feats = None
    names = list(geometry(real[:1]))[:-1]  # quantiles of these; a share of "at the border"
    print(f"{len(real):,} images a side; quantiles 10 / 50 / 90 %; Fréchet in the oracle's features"
          f"{'' if oracle else ' (no oracle in this workspace)'}.\n")
    print("| images | " + " | ".join(names) + " | at the border | Fréchet |")
    print("|---|" + "---|" * len(names) + "---:|---:|")

    def row(label, images, fd):
        g = geometry(images)
        cells = [" / ".join(f"{v:.3g}" for v in np.quantile(g[k], [0.1, 0.5, 0.9])) for k in names]
        print(f"| {label} | " + " | ".join(cells) + f" | {g['at the border'].mean():.3f} | {fd} |")

    row("real (held-out)", real, "0")
    for path in renders:
        p = json.loads((path.parent / "meta.json").read_text())["params"]["fonts"]
        knobs = f"box {p['box_min']:g}–{p['box_max']:g}, widen {p['widen']:g}"
        images = load_imageset(path).images[:args.samples]
        fd = (f"{frechet_distance(feats, features(oracle, images, torch.device('cpu'))):.1f}"
              if oracle else "-")
        row(f"renders {path.parent.name[:8]} ({knobs})", images, fd)
    return 0


if __name__ == "__main__":
    sys.exit(cached.run(main))
