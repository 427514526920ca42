import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


import subprocess  # noqa: E402

import pytest  # noqa: E402

from renderers.fontfiles import discover, matplotlib_fonts  # noqa: E402

# the smoke study at one budget and one seed, with fewer steps: every mixture, a refiner, the gap
# stages; for the tests that compare whole runs made different ways
SMOKE_ONE = ["--set", "experiment.budgets=[55]", "--set", "experiment.seeds=[0]",
             "--set", "classifier.steps=100", "--set", "refiner.steps=10",
             "--set", "gap.steps=10", "--set", "gap.samples=200"]


def cmd(*args):
    return [sys.executable, "-m", "pipeline", *args]


def pipeline(*args, check=True):
    proc = subprocess.run(cmd(*args), cwd=ROOT, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"pipeline {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def run_smoke(work, *extra) -> str:
    """`pipeline run smoke` (one budget, one seed) in `work`; its stdout."""
    return pipeline("run", "smoke", "--workdir", str(work), *SMOKE_ONE, *extra).stdout


def report_of(work) -> Path:
    """Where a --set run published its report."""
    return next(Path(work).glob("variants/*"))


@pytest.fixture(scope="session")
def smoke_jobs1(tmp_path_factory) -> Path:
    """The report of an uninterrupted smoke run (one budget, one seed) with --jobs 1."""
    work = tmp_path_factory.mktemp("smoke-jobs1")
    run_smoke(work, "--jobs", "1")
    return report_of(work)


@pytest.fixture(scope="module")
def fonts():
    """The usable fonts: matplotlib's, checked."""
    return [c.path for c in discover() if c.ok]


def mpl_font(name):
    return next(p for p in matplotlib_fonts() if p.name == name)
