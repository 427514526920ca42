"""Read MNIST from the four standard IDX files, checked, as uint8 tensors.

Accepted layouts of a data folder: the four files directly (gzipped or not), or torchvision's
`MNIST/raw` below it. Every file is checked for its IDX magic number, its shape, its length and the
sha256 of its decompressed bytes, so any copy of the original MNIST works and nothing else does.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
import zlib
from pathlib import Path

import numpy as np

VENDORED_DIR = Path(__file__).resolve().parent / "mnist"

# name -> (IDX magic, shape, sha256 of the decompressed file)
FILES = {
    "train-images-idx3-ubyte": (2051, (60000, 28, 28),
                                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    "train-labels-idx1-ubyte": (2049, (60000,),
                                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    "t10k-images-idx3-ubyte": (2051, (10000, 28, 28),
                               "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    "t10k-labels-idx1-ubyte": (2049, (10000,),
                               "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
}


class DataError(Exception):
    """A data file is missing or not what it should be; the message is one line for the user."""


def find_file(data_dir: Path, name: str) -> Path:
    """The path of one MNIST file in `data_dir` (plain, `.gz`, or torchvision's `MNIST/raw`)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"MNIST folder {data_dir} does not exist; pass --data-dir with a folder "
                        "holding the four IDX files")
    for folder in (data_dir, data_dir / "MNIST" / "raw", data_dir / "raw"):
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    raise DataError(f"{name}(.gz) is missing in {data_dir}; put the four MNIST IDX files there "
                    "(plain or gzipped, or torchvision's MNIST/raw layout)")


def read_idx(path: Path, name: str) -> np.ndarray:
    """Decode and check one IDX file; raise DataError naming the file and the fault."""
    magic, shape, digest = FILES[name]
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{path}: cannot decompress ({exc}); the file is truncated or corrupt, "
                        "copy it again") from None
    header = 4 + 4 * len(shape)
    if len(raw) < header:
        raise DataError(f"{path}: only {len(raw)} bytes, shorter than an IDX header; the file is "
                        "truncated, copy it again")
    found_magic = struct.unpack(">I", raw[:4])[0]
    if found_magic != magic:
        raise DataError(f"{path}: IDX magic number {found_magic}, expected {magic}; this is not "
                        f"the MNIST file {name}")
    dims = struct.unpack(f">{len(shape)}I", raw[4:header])
    if tuple(dims) != shape:
        raise DataError(f"{path}: shape {tuple(dims)}, expected {shape}; this is not the MNIST "
                        f"file {name}")
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise DataError(f"{path}: {len(raw)} bytes after decompression, expected {expected}; the "
                        "file is truncated or padded, copy it again")
    if hashlib.sha256(raw).hexdigest() != digest:
        raise DataError(f"{path}: sha256 mismatch; the file is corrupt or not the original "
                        "MNIST, copy it again")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def load_mnist(data_dir: Path | None = None) -> dict[str, np.ndarray]:
    """All of MNIST: `train_images` [60000, 28, 28], `train_labels`, `test_images`, `test_labels`.

    Images are uint8 arrays, labels int64. `data_dir` defaults to the copy shipped with synthgap.
    """
    data_dir = Path(data_dir) if data_dir is not None else VENDORED_DIR
    out = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        for part, kind in (("images", "idx3"), ("labels", "idx1")):
            name = f"{prefix}-{part}-{kind}-ubyte"
            array = read_idx(find_file(data_dir, name), name)
            out[f"{split}_{part}"] = array.astype(np.int64) if part == "labels" else array
    return out


def check_mnist(data_dir: Path) -> None:
    """Raise DataError unless `data_dir` holds a complete, intact copy of MNIST."""
    load_mnist(data_dir)
