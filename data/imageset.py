"""ImageSet: uint8 images [N, C, H, W], int64 labels [N] and a JSON meta, saved as a pickle-free .npz."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class ImageSet:
    images: np.ndarray  # uint8 [N, C, H, W]
    labels: np.ndarray  # int64 [N]
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.images = np.asarray(self.images)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(f"ImageSet images must be uint8 [N, C, H, W], got "
                             f"{self.images.dtype} {list(self.images.shape)}")
        if self.labels.shape != (len(self.images),):
            raise ValueError(f"ImageSet labels must be [N] = [{len(self.images)}], got "
                             f"{list(self.labels.shape)}")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx, **meta) -> "ImageSet":
        return ImageSet(self.images[idx], self.labels[idx], {**self.meta, **meta})


def save_imageset(imageset: ImageSet, path: Path) -> None:
    """Write `path` (.npz) atomically: a crash leaves either the old file or the new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, images=imageset.images, labels=imageset.labels,
                 meta=np.array(json.dumps(imageset.meta, sort_keys=True)))
    os.replace(tmp, path)


def load_imageset(path: Path) -> ImageSet:
    """Read an ImageSet .npz (never unpickles)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ImageSet {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            return ImageSet(z["images"], z["labels"], json.loads(str(z["meta"])))
    except (KeyError, ValueError, OSError) as exc:
        raise ValueError(f"{path} is not an ImageSet .npz (images, labels, meta): {exc}") from None
