"""The gap instruments: C2ST, Deep SVDD, the Fréchet distance and `pipeline detect`."""

import subprocess
import sys
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch
from PIL import Image

from classifiers.detect import DetectConfig
from classifiers.detector import (GapConfig, auc_delong, binomial_p, c2st, deep_svdd, make_detector,
                                  to_input)
from classifiers.frechet import frechet_distance

FAST = GapConfig(steps=60, width=8, batch_size=64)


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
    assert "The detectors computed in " in proc.stdout  # the precision --precision auto chose
    assert "c2st-pixel" in proc.stdout and "c2st-spectrum1d" in proc.stdout and "svdd" in proc.stdout


@pytest.mark.parametrize("problem", ["empty", "few", "unreadable", "missing"])
def test_detect_bad_inputs(tmp_path, problem):
    real = tmp_path / "real"
    write_pngs(real, blobs(20, 0))
    bad = tmp_path / "bad"
    bad.mkdir()
    if problem == "few":
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
    expected = {"empty": "holds no images", "few": "needs at least 8", "unreadable": "unreadable",
                "missing": "neither a folder"}[problem]
    assert expected in lines[0]


# ----------------------------------------------------------------- native resolution (detect)
NATIVE = DetectConfig(steps=60, width=8, batch_size=64, crop=32, crops=2)


def noise(n, seed, side=64):
    return (np.random.default_rng(seed).random((n, 1, side, side)) * 255).astype(np.uint8)


def upsampled(images):
    """Down-sampled 2x by area and up-sampled back by nearest neighbour: the trace is gone after
    any 2x down-sizing."""
    x = torch.as_tensor(images).float()
    small = torch.nn.functional.avg_pool2d(x, 2)
    return torch.nn.functional.interpolate(small, scale_factor=2, mode="nearest").round().byte().numpy()


def test_crops_keep_the_upsampling_trace_that_resizing_erases():
    from classifiers.detect import detect as run_detect, resize

    real, fake = noise(160, 0), upsampled(noise(160, 1))
    # the trace vanishes under a 2x down-size: both sides become the same kind of image
    assert np.abs(resize(fake, 32).astype(int) - resize(upsampled(fake), 32).astype(int)).max() <= 1
    rows, _ = run_detect(real, [fake], ["pixel", "spectrum1d"], NATIVE, 0, torch.device("cpu"))
    auc = {r["instrument"]: r["auc"] for r in rows}
    assert auc["c2st-pixel"] >= 0.95 and auc["c2st-spectrum1d"] >= 0.95, auc
    resized, _ = run_detect(real, [fake], ["pixel", "spectrum1d"], replace(NATIVE, resize=True), 0,
                        torch.device("cpu"))
    for r in resized:
        if r["instrument"] != "svdd":
            assert r["auc_ci_low"] < 0.5 + 0.1 and r["auc"] < 0.7, r  # blind once resized


def test_a_set_against_a_random_half_of_itself_reads_chance():
    from classifiers.detect import detect as run_detect

    images = upsampled(noise(320, 2))
    order = np.random.default_rng(3).permutation(len(images))
    rows, _ = run_detect(images[order[:160]], [images[order[160:]]], ["pixel", "fourier", "spectrum1d"],
                     NATIVE, 0, torch.device("cpu"))
    assert {r["instrument"] for r in rows} == {"c2st-pixel", "c2st-fourier", "c2st-spectrum1d",
                                               "svdd"}
    for r in rows:
        assert r["auc_ci_low"] < 0.5 < r["auc_ci_high"], r
        assert 0 <= r["ap"] <= 1 and 0 <= r["accuracy_at_threshold"] <= 1


def test_mixed_sizes_are_centre_cropped_and_said():
    from classifiers.detect import common_size

    a = [np.zeros((1, 40, 40), np.uint8)] * 3 + [np.zeros((1, 36, 44), np.uint8)]
    b = [np.zeros((3, 32, 48), np.uint8)] * 2
    (sa, sb), note = common_size(a, b)
    assert sa.shape == (4, 3, 32, 40) and sb.shape == (2, 3, 32, 40)
    assert "centre-cropped to 32x40" in note
    assert common_size([np.zeros((1, 8, 8), np.uint8)] * 2)[1] == ""


def test_saved_detectors_score_as_trained_and_the_cli_uses_them(tmp_path):
    from classifiers.cli import load_detector, score_images, write_outputs
    from classifiers.detect import detect as run_detect

    real, fake = noise(40, 0, 48), upsampled(noise(40, 1, 48))
    cfg = replace(NATIVE, steps=10)
    rows, kept = run_detect(real, [fake], ["pixel", "spectrum1d"], cfg, 0, torch.device("cpu"))
    write_outputs(tmp_path / "out", rows, kept, cfg, ["fake"])
    assert (tmp_path / "out" / "roc.png").is_file()
    assert len((tmp_path / "out" / "scores.csv").read_text().splitlines()) > 40
    for kind in ("pixel", "spectrum1d"):
        net, mean, std, meta = kept[kind]
        trained = score_images(net, mean, std, {**asdict(cfg), "kind": kind}, fake,
                               torch.device("cpu"))
        loaded = load_detector(tmp_path / "out" / f"detector-{kind}.safetensors")
        again = score_images(*loaded, fake, torch.device("cpu"))
        assert np.array_equal(trained, again) and loaded[3]["kind"] == kind
    write_pngs(tmp_path / "imgs", fake)
    proc = detect("--weights", tmp_path / "out", "--images", tmp_path / "imgs", "--out",
                      tmp_path / "scored")
    assert proc.returncode == 0, proc.stderr
    scored = (tmp_path / "scored" / "scores.csv").read_text().splitlines()
    assert scored[0] == "file,score_pixel,score_spectrum1d" and len(scored) == 41


def test_blur_jpeg_flip_changes_what_it_says():
    from classifiers.detect import blur_jpeg_flip

    x = noise(20, 5, 32)
    assert np.array_equal(blur_jpeg_flip(x, 0.0, False, np.random.default_rng(0)), x)
    flipped = blur_jpeg_flip(x, 0.0, True, np.random.default_rng(0))
    same = [np.array_equal(a, b) for a, b in zip(flipped, x)]
    mirrored = [np.array_equal(a, b[..., ::-1]) for a, b in zip(flipped, x)]
    assert all(s or m for s, m in zip(same, mirrored)) and 0 < sum(mirrored) < 20
    changed = blur_jpeg_flip(x, 1.0, False, np.random.default_rng(0))
    assert changed.shape == x.shape and changed.dtype == np.uint8
    assert all(not np.array_equal(a, b) for a, b in zip(changed, x))
    assert changed.astype(float).std() < x.astype(float).std()  # blur and JPEG smooth the noise


def test_a_resnet_starts_from_given_weights_where_they_fit(tmp_path):
    import torchvision
    from safetensors.torch import save_file

    from classifiers.detector import make_net, start_from

    donor = torchvision.models.resnet18(weights=None)  # 1,000 classes, RGB: head and stem differ
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, str(tmp_path / "w.safetensors"))
    net = make_net(torch.zeros(1, 1, 32, 32), "resnet18", 8)
    n = start_from(net, tmp_path / "w.safetensors")
    assert torch.equal(net.layer1[0].conv1.weight, donor.layer1[0].conv1.weight)
    assert net.fc.out_features == 1 and net.conv1.in_channels == 1 and 0 < n < len(donor.state_dict())
    save_file({"nothing": torch.zeros(2)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match="no tensor fits"):
        start_from(net, tmp_path / "bad.safetensors")
