"""The installable package: its top-level names are the project's own, and it ships the configs
and MNIST."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_holds_the_users_names_plus_synthgap_and_its_data(tmp_path):
    src = tmp_path / "src"
    for name in ("synthgap", "renderers", "gan", "classifiers", "configs"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pipeline.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "-q", "-w", str(tmp_path / "dist"), str(src)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = (tmp_path / "dist").glob("synthgap-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"synthgap", "renderers", "gan", "classifiers", "configs", "pipeline.py"}
    assert {"configs/mnist-sweep.toml", "configs/smoke.toml",
            "synthgap/data/mnist/train-images-idx3-ubyte.gz"} <= set(names)
