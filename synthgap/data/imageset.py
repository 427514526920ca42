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


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def read_files(folder: Path, mode: str) -> tuple[list[Path], list[np.ndarray]]:
    """The image files of a folder, sorted, and each image as uint8 [H, W, C] (mode "RGBA", "RGB"
    or "L"; "auto": L when every image is grayscale, else RGB); sizes may differ."""
    from PIL import Image, UnidentifiedImageError

    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder of images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    out = []
    for p in files:
        try:
            with Image.open(p) as img:
                gray = img.mode in ("1", "L", "LA", "I", "I;16", "F")
                a = np.asarray(img.convert(("L" if gray else "RGB") if mode == "auto" else mode))
        except (UnidentifiedImageError, OSError) as exc:
            raise ValueError(f"{p}: unreadable image ({type(exc).__name__}); remove or replace "
                             "it") from None
        out.append(a[..., None] if a.ndim == 2 else a)
    if mode == "auto" and len({a.shape[2] for a in out}) > 1:
        out = [np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a for a in out]
    return files, out


def read_folder(folder: Path, mode: str) -> np.ndarray:
    """All images of a folder as uint8 [N, C, H, W] (see `read_files`); one size only."""
    _, out = read_files(folder, mode)
    sizes = {a.shape for a in out}
    if len(sizes) > 1:
        raise ValueError(f"{folder}: images of different sizes {sorted(sizes)[:3]}; resize them "
                         "to one size")
    return np.stack(out).transpose(0, 3, 1, 2).copy()


def load_images(path: Path, mode: str) -> tuple[np.ndarray, np.ndarray | None]:
    """An ImageSet .npz (images, labels) or a folder of images (images, no labels)."""
    if path.is_dir():
        return read_folder(path, mode), None
    if path.suffix == ".npz":
        s = load_imageset(path)
        return s.images, s.labels
    raise ValueError(f"{path} is neither a folder of images nor an ImageSet .npz")
