import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


import subprocess  # noqa: E402

import pytest  # noqa: E402

# the smoke study at one budget and one seed, with fewer steps: every mixture, a refiner, the gap
# stages; for the tests that compare whole runs made different ways
SMOKE_ONE = ["--set", "experiment.budgets=[55]", "--set", "experiment.seeds=[0]",
             "--set", "classifier.steps=100", "--set", "refiner.steps=10",
             "--set", "gap.steps=10", "--set", "gap.samples=200"]


def run_smoke(work, *extra) -> str:
    """`pipeline run smoke` (one budget, one seed) in `work`; its stdout."""
    proc = subprocess.run([sys.executable, "-m", "pipeline", "run", "smoke", "--workdir", str(work),
                           *SMOKE_ONE, *extra], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def report_of(work) -> Path:
    """Where a --set run published its report."""
    return next(Path(work).glob("variants/*"))


@pytest.fixture(scope="session")
def smoke_jobs1(tmp_path_factory) -> Path:
    """The report of an uninterrupted smoke run (one budget, one seed) with --jobs 1."""
    work = tmp_path_factory.mktemp("smoke-jobs1")
    run_smoke(work, "--jobs", "1")
    return report_of(work)
