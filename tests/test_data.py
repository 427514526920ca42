import gzip
import shutil
import subprocess
import sys

import numpy as np
import pytest

from synthgap.data.imageset import ImageSet, load_imageset, save_imageset
from synthgap.data.mnist import FILES, VENDORED_DIR, DataError, load_mnist, read_idx
from synthgap.data.splits import nested_budget, pool_holdout

NAMES = list(FILES)


@pytest.fixture(scope="module")
def mnist():
    return load_mnist()


@pytest.fixture(scope="module")
def raw_copy(tmp_path_factory):
    """The four files decompressed, in torchvision's MNIST/raw layout."""
    root = tmp_path_factory.mktemp("tv")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in NAMES:
        (raw / name).write_bytes(gzip.decompress((VENDORED_DIR / f"{name}.gz").read_bytes()))
    return root


def test_vendored_mnist_shapes_and_types(mnist):
    assert mnist["train_images"].shape == (60000, 28, 28)
    assert mnist["test_images"].shape == (10000, 28, 28)
    assert mnist["train_images"].dtype == np.uint8
    assert mnist["train_labels"].dtype == np.int64
    assert np.bincount(mnist["test_labels"]).tolist() == [980, 1135, 1032, 1010, 982, 892, 958,
                                                          1028, 974, 1009]


def test_torchvision_raw_layout_reads_the_same(mnist, raw_copy):
    other = load_mnist(raw_copy)
    for k in mnist:
        assert np.array_equal(mnist[k], other[k])


def bad_copy(tmp_path, raw_copy, name, data):
    """A data folder with three good files and `data` as file `name`."""
    folder = tmp_path / "bad"
    folder.mkdir()
    for n in NAMES:
        if n != name:
            shutil.copy(raw_copy / "MNIST" / "raw" / n, folder / n)
    (folder / name).write_bytes(data)
    return folder


def good_bytes(raw_copy, name):
    return (raw_copy / "MNIST" / "raw" / name).read_bytes()


@pytest.mark.parametrize("case, message", [
    ("truncated", "bytes after decompression, expected 10008"),
    ("truncated_gz", "cannot decompress"),
    ("magic", "IDX magic number 2051, expected 2049"),
    ("shape", "shape (9999,), expected (10000,)"),
    ("corrupt", "sha256 mismatch"),
    ("tiny", "shorter than an IDX header"),
])
def test_bad_files_give_one_clear_line(tmp_path, raw_copy, case, message):
    name = "t10k-labels-idx1-ubyte"
    good = good_bytes(raw_copy, name)
    data = {"truncated": good[:5000],
            "truncated_gz": gzip.compress(good)[:2000],
            "magic": (2051).to_bytes(4, "big") + good[4:],
            "shape": good[:4] + (9999).to_bytes(4, "big") + good[8:],
            "corrupt": good[:100] + bytes([(good[100] + 1) % 10]) + good[101:],
            "tiny": b"\x00\x00"}[case]
    if case == "corrupt":
        assert data != good
    path = tmp_path / "f"
    path.write_bytes(data)
    with pytest.raises(DataError) as err:
        read_idx(path, name)
    text = str(err.value)
    assert message in text and str(path) in text and "\n" not in text


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte\\(.gz\\) is missing"):
        load_mnist(bad_copy_missing(tmp_path))
    with pytest.raises(DataError, match="does not exist"):
        load_mnist(tmp_path / "nowhere")


def bad_copy_missing(tmp_path):
    folder = tmp_path / "three"
    folder.mkdir()
    for name in NAMES[:3]:
        shutil.copy(VENDORED_DIR / f"{name}.gz", folder)
    return folder


def test_cli_rejects_a_bad_data_dir_without_writing(tmp_path, raw_copy):
    name = "train-labels-idx1-ubyte"
    folder = bad_copy(tmp_path, raw_copy, name, good_bytes(raw_copy, name)[:-10])
    work = tmp_path / "work"
    proc = subprocess.run([sys.executable, "-m", "pipeline", "run", "smoke", "--data-dir",
                           str(folder), "--workdir", str(work)], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "train-labels-idx1-ubyte" in lines[0] and "truncated" in lines[0]
    assert not work.exists()


def test_pool_holdout_is_disjoint_stratified_and_not_contiguous(mnist):
    labels = mnist["train_labels"]
    pool, holdout = pool_holdout(labels, 10000, seed=0)
    assert len(pool) == 50000 and len(holdout) == 10000
    assert len(np.union1d(pool, holdout)) == 60000
    share = np.bincount(labels) / len(labels)
    assert np.abs(np.bincount(labels[holdout], minlength=10) - share * 10000).max() <= 2
    # a random split, not a block of the file: holdout indices spread over the whole file
    assert np.histogram(holdout, bins=6, range=(0, 60000))[0].min() > 1500
    again, _ = pool_holdout(labels, 10000, seed=0)
    other, _ = pool_holdout(labels, 10000, seed=1)
    assert np.array_equal(pool, again) and not np.array_equal(pool, other)


def test_budgets_are_nested_stratified_and_seeded(mnist):
    labels = mnist["train_labels"][pool_holdout(mnist["train_labels"], 10000, 0)[0]]
    share = np.bincount(labels) / len(labels)
    for seed in (0, 1, 2):
        previous = np.array([], dtype=np.int64)
        for b in (55, 385, 5500, 38500):
            idx = nested_budget(labels, b, seed)
            assert len(idx) == b == len(np.unique(idx))
            assert np.isin(previous, idx).all()
            assert np.abs(np.bincount(labels[idx], minlength=10) - share * b).max() <= 2
            previous = idx
    a, b = nested_budget(labels, 385, 0), nested_budget(labels, 385, 1)
    assert len(np.intersect1d(a, b)) < 385 // 2
    with pytest.raises(ValueError, match="budget must be between"):
        nested_budget(labels, 0, 0)


def test_imageset_round_trip_and_bad_files(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 1, 28, 28), dtype=np.uint8)
    s = ImageSet(images, np.arange(5), {"source": "test", "n": 5})
    save_imageset(s, tmp_path / "s.npz")
    back = load_imageset(tmp_path / "s.npz")
    assert np.array_equal(back.images, images) and back.labels.tolist() == list(range(5))
    assert back.meta == {"source": "test", "n": 5}
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not an ImageSet"):
        load_imageset(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="uint8"):
        ImageSet(images.astype(np.float32), np.arange(5))
    with pytest.raises(ValueError, match="labels must be"):
        ImageSet(images, np.arange(4))
