"""The CUDA path: the refiner, a classifier cell and a gap detector on the GPU, each against its CPU
result. Skipped, with the reason shown, where torch sees no CUDA device."""

import numpy as np
import pytest
import torch

from test_gan import digits as bars

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA device")]
CUDA, CPU = torch.device("cuda"), torch.device("cpu")


def test_refiner_trains_on_cuda_like_on_cpu():
    from gan.train import refine, train_refiner
    real, syn, labels = bars(64, 0, 2), bars(64, 1, 6), np.arange(64) % 10
    cfg = {"steps": 60, "batch_size": 16, "width": 8, "blocks": 1, "d_width": 16, "log_every": 20,
           "holdout": 8}
    out = {}
    for device in (CPU, CUDA):
        nets, history = train_refiner(real, syn, labels, cfg, 0, device, real_labels=labels)
        out[device.type] = (history, refine(nets["G"], syn, device))
    (h_cpu, r_cpu), (h_gpu, r_gpu) = out["cpu"], out["cuda"]
    assert all(np.isfinite(v) for row in h_gpu for v in row.values())
    assert [h["step"] for h in h_gpu] == [h["step"] for h in h_cpu]
    # two devices draw different random numbers: the same loop, not the same bits
    assert abs(h_gpu[-1]["cycle"] - h_cpu[-1]["cycle"]) < 0.5
    assert r_gpu.shape == r_cpu.shape and r_gpu.dtype == np.uint8


def test_classifier_cell_on_cuda_matches_cpu():
    from classifiers.digits import error_rate, train_classifier
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    images = bars(400, 2, 3)
    images[labels == 1] = bars(int((labels == 1).sum()), 3, 8)
    cfg = {"steps": 60, "batch_size": 32, "width": 4}
    errors = {d.type: error_rate(train_classifier([(images, labels, 1.0)], cfg, 0, d), images,
                                 labels, d) for d in (CPU, CUDA)}
    assert errors["cuda"] <= errors["cpu"] + 0.05, errors


def test_gap_detector_on_cuda_matches_cpu():
    from classifiers.detector import c2st
    a, b = bars(300, 4, 2), bars(300, 5, 7)
    cfg = {"steps": 60, "batch_size": 32, "width": 4}
    aucs = {d.type: c2st(a, b, "pixel", cfg, 0, d)["auc"] for d in (CPU, CUDA)}
    assert aucs["cuda"] > 0.9 and abs(aucs["cuda"] - aucs["cpu"]) < 0.1, aucs
