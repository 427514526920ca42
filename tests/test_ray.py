"""The Ray executor on a local Ray instance of 2 CPUs: the same cache as the local executor, retries
of killed workers, remote errors named, and the smoke study identical under both executors."""

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import ray

from synthgap.runner import dag
from synthgap.runner.workspace import Workspace
import toy_stages as toy
from conftest import report_of, run_smoke
from test_dag import go, graph, grouped



@pytest.fixture(scope="module", autouse=True)
def local_ray():
    # the workers import the toy stages from tests/
    here = Path(__file__).resolve().parent
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": f"{here}:{here.parent}"}})
    yield
    ray.shutdown()


@pytest.fixture
def ws(tmp_path, monkeypatch):
    monkeypatch.setenv("TOY_CALL_LOG", str(tmp_path / "calls.log"))
    return Workspace(tmp_path / "ws")


def test_ray_fills_the_same_cache_as_the_local_executor(ws, tmp_path):
    stages = grouped(graph(n=3), ["double/0", "double/1"])
    rows = go(stages, ws, executor="ray")
    assert (ws.root / "total.txt").read_text() == "6"
    metas = {m["name"]: m for m in (json.loads(p.read_text())
                                    for p in ws.cache.glob("*/*/meta.json"))}
    assert set(metas) == set(rows) and all(m["key"] == rows[n]["key"] for n, m in metas.items())
    assert all(m["node"]["id"] for m in metas.values())
    assert metas["double/0"]["group"] == ["double/0", "double/1"]
    # the local executor finds everything done, and so does Ray again
    for executor in ("local", "ray"):
        again = go(stages, ws, executor=executor)
        assert not any(r["run"] for r in again.values())
    # a local workspace is resumed by Ray: one stage removed, one stage run
    local = Workspace(tmp_path / "local")
    go(stages, local)
    (local.out("total", rows["total"]["key"]) / "meta.json").unlink()
    again = go(stages, local, executor="ray")
    assert [n for n, r in again.items() if r["run"]] == ["total"]
    assert (local.root / "total.txt").read_text() == "6"


def test_a_stage_that_raises_is_named_with_the_remote_error(ws):
    with pytest.raises(dag.StageError, match=r"double/\d.*RuntimeError: asked to fail"):
        go(graph(fail=True), ws, executor="ray")
    assert not list(ws.cache.glob("double/*/meta.json"))


def test_a_killed_worker_process_is_retried_and_the_run_finishes_alike(ws, tmp_path):
    pid_file = tmp_path / "worker.pid"
    stages = graph(value=5, n=2)
    stages["src"] = dag.Stage("src", toy.slow_source, {"value": 5, "pid_file": str(pid_file),
                                                       "seconds": 3})
    errors = []

    def drive():
        try:
            go(stages, ws, executor="ray")
        except Exception as exc:  # reported below
            errors.append(exc)

    driver = threading.Thread(target=drive)
    driver.start()
    # generous deadlines: a loaded machine starts Ray's workers slowly
    deadline = time.time() + 300
    while not pid_file.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert pid_file.exists(), "no Ray worker started the stage within 300 s"
    first = int(pid_file.read_text())
    os.kill(first, signal.SIGKILL)  # the worker process, mid-stage
    driver.join(600)
    assert not driver.is_alive() and not errors, errors
    assert int(pid_file.read_text()) != first  # another worker ran the stage again
    local = Workspace(tmp_path / "local")
    go(stages, local)
    assert (ws.root / "total.txt").read_text() == (local.root / "total.txt").read_text() == "20"


def test_smoke_on_ray_gives_the_local_results_and_either_resumes_it(tmp_path, smoke_jobs1):
    out = run_smoke(tmp_path, "--executor", "ray")
    assert "0 cached" in out
    for name in ("results.csv", "gap.csv"):
        assert (report_of(tmp_path) / name).read_bytes() == (smoke_jobs1 / name).read_bytes()
    for extra in (["--executor", "ray"], ["--jobs", "2"]):
        assert " 0 stage(s) run" in run_smoke(tmp_path, *extra)
