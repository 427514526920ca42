"""Rendering speed of the font renderer and the compositor, in images per second.

    python benchmarks/render_speed.py [--count 20000] [--workers 1 2]
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from renderers.composite import MODES, composite  # noqa: E402
from renderers.fontfiles import discover  # noqa: E402
from renderers.fonts import render_digits  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    fonts = [c.path for c in discover() if c.ok]
    render_digits(fonts, 2000, seed=99)  # warm-up: glyph caches, torch kernels
    print(f"{len(fonts)} fonts, {args.count} digits per run")
    for w in args.workers:
        start = time.perf_counter()
        images, labels = render_digits(fonts, args.count, seed=0, workers=w)
        dt = time.perf_counter() - start
        print(f"fonts      workers={w}: {args.count / dt:8.0f} digits/s  "
              f"({args.count / dt / w:6.0f} per core, {dt:.1f} s)")
    n = min(args.count, 10000)
    for mode in MODES:
        start = time.perf_counter()
        composite(images, labels, n, mode, seed=0)
        dt = time.perf_counter() - start
        print(f"composite  {mode:<8}: {n / dt:8.0f} images/s ({dt:.1f} s)")


if __name__ == "__main__":
    main()
