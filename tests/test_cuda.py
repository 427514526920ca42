"""The CUDA path: the refiner, a classifier cell, a group of cells, a gap detector, a gap stage and
a whole smoke run on the GPU, each against its CPU result. Skipped, with the reason shown, where
torch sees no CUDA device. The two devices draw different random numbers: the same computation,
not the same bits, so the tolerances are those of two seeds."""

import csv
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from tiny import digits as bars

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA device")]
CUDA, CPU = torch.device("cuda"), torch.device("cpu")


def test_refiner_trains_on_cuda_like_on_cpu():
    from gan.config import RefinerConfig
    from gan.refine import refine
    from gan.train import train_refiner
    real, syn, labels = bars(64, 0, 2), bars(64, 1, 6), np.arange(64) % 10
    cfg = RefinerConfig(steps=60, batch_size=16, width=8, blocks=1, d_width=16, log_every=20,
                        holdout=8)
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
    from classifiers.digits import ClassifierConfig, error_rate, train_classifier
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    images = bars(400, 2, 3)
    images[labels == 1] = bars(int((labels == 1).sum()), 3, 8)
    cfg = ClassifierConfig(steps=60, batch_size=32, width=4)
    errors = {d.type: error_rate(train_classifier([(images, labels, 1.0)], cfg, 0, d), images,
                                 labels, d) for d in (CPU, CUDA)}
    assert errors["cuda"] <= errors["cpu"] + 0.05, errors


def test_gap_detector_on_cuda_matches_cpu():
    from classifiers.detector import GapConfig, c2st
    a, b = bars(300, 4, 2), bars(300, 5, 7)
    cfg = GapConfig(steps=60, batch_size=32, width=4)
    aucs = {d.type: c2st(a, b, "pixel", cfg, 0, d)["auc"] for d in (CPU, CUDA)}
    assert aucs["cuda"] > 0.9 and abs(aucs["cuda"] - aucs["cpu"]) < 0.1, aucs


def test_a_group_of_cells_on_cuda_agrees_with_its_cells_alone():
    from classifiers.digits import ClassifierConfig, error_rate, train_classifier, train_classifiers
    images, labels = bars(400, 2, 3), np.arange(400) % 2
    images[labels == 1] = bars(200, 3, 8)
    cells = [([(images, labels, 1.0)], seed) for seed in (0, 1, 2)]
    cfg = ClassifierConfig(steps=40, batch_size=32, width=4)
    for (sources, seed), grouped in zip(cells, train_classifiers(cells, cfg, CUDA)):
        alone = train_classifier(sources, cfg, seed, CUDA)
        assert abs(error_rate(grouped, images, labels, CUDA)
                   - error_rate(alone, images, labels, CUDA)) <= 0.02


def test_gap_stage_on_cuda_matches_cpu(tmp_path):
    from classifiers.detector import GapConfig
    from classifiers.digits import make_cnn, save_model
    from synthgap.data.imageset import ImageSet, save_imageset
    from synthgap.runner.dag import Context
    from synthgap.study import stages as st
    for name, images in (("split", bars(400, 4, 2)), ("source", bars(400, 5, 7))):
        (tmp_path / name).mkdir()
        save_imageset(ImageSet(images, np.arange(400) % 10, {}), tmp_path / name / "holdout.npz")
    (tmp_path / "oracle").mkdir()
    save_model(make_cnn(4), tmp_path / "oracle" / "model.safetensors")
    gap = GapConfig(samples=400, steps=60, batch_size=32, width=4, seed=0)
    params = {"gap": asdict(gap), "file": "holdout.npz", "oracle_width": 4}
    inputs = {k: str(tmp_path / k) for k in ("split", "source", "oracle")}
    out = {}
    for device in ("cpu", "cuda"):
        (tmp_path / device).mkdir()
        out[device] = st.gap(params, inputs, tmp_path / device, Context(device=device))
    for cpu, gpu in zip(out["cpu"]["rows"], out["cuda"]["rows"]):
        assert cpu["instrument"] == gpu["instrument"]
        assert abs(cpu["auc"] - gpu["auc"]) < 0.15, (cpu, gpu)
    assert out["cuda"]["frechet"] == pytest.approx(out["cpu"]["frechet"], rel=0.05)


def test_smoke_run_on_cuda_matches_cpu(tmp_path):
    """The whole smoke study (one budget, one seed) on each device: every cell's test error within
    0.1 of the CPU's, their mean within 0.04, and every pixel C2ST within 0.15 in AUC."""
    root = Path(__file__).resolve().parent.parent
    tables = {}
    for device in ("cpu", "cuda"):
        work = tmp_path / device
        subprocess.run([sys.executable, "-m", "pipeline", "run", "smoke", "--device", device,
                        "--jobs", "4", "--workdir", str(work), "--set", "experiment.budgets=[55]",
                        "--set", "experiment.seeds=[0]"], cwd=root, check=True,
                       capture_output=True, text=True)
        report = next(work.glob("variants/*"))  # a --set run publishes under variants/
        tables[device] = {f: list(csv.DictReader(open(report / f)))
                          for f in ("results.csv", "gap.csv")}
    errors = {d: {r["mixture"]: float(r["test_error"]) for r in t["results.csv"]}
              for d, t in tables.items()}
    assert errors["cpu"].keys() == errors["cuda"].keys()
    diffs = [errors["cuda"][m] - errors["cpu"][m] for m in errors["cpu"]]
    assert max(map(abs, diffs)) < 0.1 and abs(np.mean(diffs)) < 0.04, errors
    aucs = {d: {(r["source"], r["budget"]): float(r["auc"]) for r in t["gap.csv"]
                if r["instrument"] == "c2st-pixel"} for d, t in tables.items()}
    assert all(abs(aucs["cuda"][k] - v) < 0.15 for k, v in aucs["cpu"].items()), aucs
