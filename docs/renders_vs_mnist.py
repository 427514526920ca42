"""Make docs/renders_vs_mnist.png: 100 MNIST test digits beside 100 font renders and composites.

    python docs/renders_vs_mnist.py
"""

import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from synthgap.study.config import load  # noqa: E402
from synthgap.data.mnist import load_mnist  # noqa: E402
from renderers.composite import composite  # noqa: E402
from renderers.fontfiles import discover  # noqa: E402
from renderers.fonts import render_digits  # noqa: E402


def grid(images: np.ndarray) -> np.ndarray:
    return images[:100].reshape(10, 10, 28, 28).transpose(0, 2, 1, 3).reshape(280, 280)


def main():
    cfg = load("mnist-sweep")[1]  # the study's knobs, every default filled in
    fonts = [c.path for c in discover(cfg.fonts.folders, exclude=cfg.fonts.exclude) if c.ok]
    renders, labels = render_digits(fonts, 1000, seed=0, cfg=cfg.fonts)
    order = np.argsort(labels[:100], kind="stable")
    mnist = load_mnist()["test_images"][:100]
    mnist = mnist[np.argsort(load_mnist()["test_labels"][:100], kind="stable")]
    comp, comp_labels = composite(renders, labels, 100, "gaussian", seed=0, cfg=cfg.composites)
    comp = comp[np.argsort(comp_labels, kind="stable")]
    gap = np.full((280, 8), 128, np.uint8)
    panel = np.concatenate([grid(mnist), gap, grid(renders[:100][order, 0]), gap,
                            grid(comp[:, 0])], 1)
    out = ROOT / "docs" / "renders_vs_mnist.png"
    Image.fromarray(panel).resize((panel.shape[1] * 2, 560), Image.NEAREST).save(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
