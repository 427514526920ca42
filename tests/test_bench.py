"""`pipeline bench` at toy sizes: every figure present and sane; the reference data path reads the
images the project's loop reads."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from synthgap.study.bench import PngImages, UnalignedPngs, figure, markdown, run_bench, write_pngs

TINY = {"digits": 40, "images": 64, "classifier_steps": 2, "group": 3, "refiner_steps": 2,
        "gap_steps": 2}


def test_a_figure_is_the_median_rate_with_its_range():
    row = figure("part", "loop", "steps/s", 10, [1.0, 2.0, 0.5, 4.0])
    assert (row["median"], row["low"], row["high"], row["repeats"]) == (7.5, 2.5, 20.0, 4)


def test_the_png_path_gives_the_projects_images(tmp_path):
    from gan.networks import to_signed
    images = np.random.default_rng(0).integers(0, 256, (5, 1, 28, 28), dtype=np.uint8)
    files = write_pngs(images, tmp_path / "png")
    png = PngImages(files, np.arange(5))
    x, label = png[3]
    torch.testing.assert_close(x[None], to_signed(torch.as_tensor(images[3:4])))
    assert label == 3
    renders, real, real_label = UnalignedPngs(png, png)[1][0], *UnalignedPngs(png, png)[1][2:]
    assert renders.shape == real.shape == (1, 28, 28) and 0 <= real_label < 5


def test_bench_measures_every_part_in_float32_and_on_the_fast_path():
    from synthgap.devices import Precision

    lines = []
    out = run_bench(torch.device("cpu"), 3, lines.append, TINY, Precision(channels_last=True), 1)
    table = markdown(out)
    assert table.count("\n| ") == len(out["rows"]) + 1 and "float32, channels-last" in table
    rows = {(r["part"], r["loop"], r["unit"]): r for r in out["rows"]}
    f32, fast = "project, float32", "project, float32, channels-last"
    for part in ("classifier cell", "classifier, 3 cells at once", "refiner",
                 "gap detector (c2st-pixel)"):
        unit = "cell-steps/s" if part.startswith("classifier") else "steps/s"
        for loop in (f32, fast):
            assert (part, loop, unit) in rows and (part, loop, "images/s") in rows
        ratio = rows[(part, f"{fast} / {f32}", "x")]["median"]
        assert ratio == pytest.approx(rows[(part, fast, "images/s")]["median"]
                                      / rows[(part, f32, "images/s")]["median"])
    for part in ("refiner", "gap detector (c2st-pixel)"):  # the reference loop, on the fast path
        (reference,) = [r for r in out["rows"] if r["part"] == part
                        and r["loop"].startswith("PNG DataLoader") and r["unit"] == "steps/s"]
        assert reference["loop"].endswith("float32, channels-last")
        ratio = rows[(part, f"{reference['loop']} / {fast}", "x")]["median"]
        assert ratio == pytest.approx(reference["median"] / rows[(part, fast, "steps/s")]["median"])
    timed = [r for r in out["rows"] if r["unit"] != "x"]
    assert all(0 < r["low"] <= r["median"] <= r["high"] and r["repeats"] == 3 for r in timed)
    assert len(lines) == len(out["rows"]) and out["device"] and out["threads"] == 1


def test_bench_command_says_what_it_measures_and_checks_its_json_path(tmp_path):
    root = Path(__file__).resolve().parent.parent
    help_text = subprocess.run([sys.executable, "-m", "pipeline", "bench", "--help"], cwd=root,
                               capture_output=True, text=True).stdout
    assert "DataLoader" in help_text and "--json" in help_text
    bad = subprocess.run([sys.executable, "-m", "pipeline", "bench", "--json",
                          str(tmp_path / "missing" / "b.json")], cwd=root, capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "does not exist" in bad.stdout + bad.stderr
    same = subprocess.run([sys.executable, "-m", "pipeline", "bench", "--precision", "float32"],
                          cwd=root, capture_output=True, text=True)
    assert same.returncode == 2 and "float32 is always timed" in same.stdout + same.stderr
