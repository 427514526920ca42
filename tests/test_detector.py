"""The gap instruments: C2ST, Deep SVDD, the Fréchet distance and `pipeline detect`."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from classifiers.detector import (auc_delong, binomial_p, c2st, deep_svdd, make_detector,
                                  to_input)
from classifiers.frechet import frechet_distance

FAST = {"steps": 60, "width": 8, "batch_size": 64}


def blobs(n, seed, square=False):
    """Noise images; with `square`, a bright 8x8 square in the middle (trivially different)."""
    x = (np.random.default_rng(seed).random((n, 1, 28, 28)) * 120).astype(np.uint8)
    if square:
        x[:, :, 10:18, 10:18] = 255
    return x


def test_c2st_sees_trivial_differences_and_not_halves_of_one_set():
    plain = blobs(600, 0)
    for kind in ("pixel", "fourier"):
        diff = c2st(plain[:300], blobs(300, 1, square=True), kind, FAST)
        assert diff["auc"] > 0.97 and diff["accuracy"] > 0.9 and diff["p_value"] < 1e-10, diff
        same = c2st(plain[:300], plain[300:], kind, FAST)
        assert 0.4 < same["auc"] < 0.6 and same["auc_ci_low"] < 0.5 < same["auc_ci_high"], same
        assert same["p_value"] > 0.01 and same["n_test"] == 300


def test_deep_svdd_has_no_bias_and_separates():
    net = make_detector(1, 8, bias=False)
    assert not [n for n, _ in net.named_parameters() if "bias" in n]
    assert not any(getattr(m, "bias", None) is not None for m in net.modules())
    plain = blobs(600, 0)
    diff = deep_svdd(plain[:300], plain[300:450], blobs(150, 1, square=True), FAST)
    assert diff["auc"] > 0.95, diff
    same = deep_svdd(plain[:300], plain[300:450], plain[450:], FAST)
    assert 0.35 < same["auc"] < 0.65, same


def test_grey_input_keeps_the_grey_levels_and_drops_the_shape():
    rng = np.random.default_rng(0)
    x = (rng.random((3, 1, 8, 8)) * 255).astype(np.uint8)
    shuffled = x.reshape(3, 1, 64)[:, :, rng.permutation(64)].reshape(3, 1, 8, 8)
    a, b = to_input(x, "grey"), to_input(shuffled, "grey")
    assert a.shape == (3, 1, 8, 8) and torch.equal(a, b)  # any arrangement of the same pixels
    assert torch.all(a.flatten(1).diff(dim=1) >= 0)  # sorted
    assert torch.allclose(a.flatten(1).sum(1), torch.as_tensor(x).float().flatten(1).sum(1) / 255)
    # a shape difference with the same pixel values is invisible to it
    bar = np.zeros((200, 1, 28, 28), np.uint8)
    bar[:, :, 10:14, 4:24] = 200
    col = np.zeros((200, 1, 28, 28), np.uint8)
    col[:, :, 4:24, 10:14] = 200
    same = c2st(bar, col, "grey", FAST)
    assert same["auc"] == pytest.approx(0.5)


def test_fourier_input_of_a_constant_image():
    x = to_input(np.full((2, 1, 8, 8), 255, np.uint8), "fourier")
    assert x.shape == (2, 1, 8, 8)
    assert x[0, 0, 4, 4].item() == pytest.approx(np.log1p(64.0), rel=1e-5)  # DC term, centred
    x[:, :, 4, 4] = 0
    assert x.abs().max().item() < 1e-4  # nothing but the DC term
    with pytest.raises(ValueError, match="unknown detector input"):
        to_input(np.zeros((1, 1, 8, 8), np.uint8), "wavelet")


def test_auc_and_p_value_numbers():
    labels = np.r_[np.ones(4), np.zeros(4)]
    assert auc_delong(np.arange(8)[::-1], labels)[0] == 1.0
    assert auc_delong(np.arange(8), labels)[0] == 0.0
    assert auc_delong(np.zeros(8), labels)[0] == 0.5  # ties count half
    assert binomial_p(50, 100) == pytest.approx(0.5398, abs=1e-4)
    assert binomial_p(60, 100) == pytest.approx(0.02844, abs=1e-4)


def test_frechet_distance():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 4))
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-8)
    shifted = a + np.array([2.0, 0, 0, 0])
    assert frechet_distance(a, shifted) == pytest.approx(4.0, rel=1e-6)  # |mu_a - mu_b|^2 only
    wide = a * 2  # Tr(S + 4S - 2 * 2S) = Tr(S), about 4
    assert frechet_distance(a, wide) == pytest.approx(4.0, rel=0.1)


def detect(*args):
    return subprocess.run([sys.executable, "-m", "pipeline", "detect", *map(str, args)],
                          capture_output=True, text=True)


def write_pngs(folder, images, mode="L"):
    folder.mkdir()
    for i, img in enumerate(images):
        Image.fromarray(img[0] if mode == "L" else img.transpose(1, 2, 0)).save(folder / f"{i}.png")


def test_detect_on_folders_of_any_size(tmp_path):
    write_pngs(tmp_path / "real", blobs(80, 0))
    rgb = np.repeat(blobs(80, 1, square=True), 3, 1)
    big = torch.nn.functional.interpolate(torch.as_tensor(rgb).float(), size=(40, 40)).byte().numpy()
    write_pngs(tmp_path / "fake", big, "RGB")
    proc = detect("--real", tmp_path / "real", "--synthetic", tmp_path / "fake", "--steps", 40)
    assert proc.returncode == 0, proc.stderr
    assert "c2st-pixel" in proc.stdout and "c2st-fourier" in proc.stdout and "svdd" in proc.stdout


@pytest.mark.parametrize("problem", ["empty", "mixed", "unreadable", "missing"])
def test_detect_bad_inputs(tmp_path, problem):
    real = tmp_path / "real"
    write_pngs(real, blobs(20, 0))
    bad = tmp_path / "bad"
    bad.mkdir()
    if problem == "mixed":
        Image.new("L", (28, 28)).save(bad / "a.png")
        Image.new("L", (30, 28)).save(bad / "b.png")
    elif problem == "unreadable":
        Image.new("L", (28, 28)).save(bad / "a.png")
        (bad / "b.png").write_bytes(b"not a png")
    elif problem == "missing":
        bad = tmp_path / "nowhere"
    proc = detect("--real", real, "--synthetic", bad, "--steps", 5)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    expected = {"empty": "holds no images", "mixed": "different sizes", "unreadable": "unreadable",
                "missing": "neither a folder"}[problem]
    assert expected in lines[0]
