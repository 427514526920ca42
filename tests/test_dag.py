import importlib
import shutil
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from synthgap.runner import codehash, dag
from synthgap.runner.run import Execution, RunLog, run
from synthgap.runner.workspace import Workspace
import toy_stages as toy


def graph(value=1, fail=False, n=3):
    stages = {"src": dag.Stage("src", toy.source, {"value": value})}
    for i in range(n):
        stages[f"double/{i}"] = dag.Stage(f"double/{i}", toy.double, {"i": i, "fail": fail},
                                          {"x": "src"})
    stages["total"] = dag.Stage("total", toy.total, {},
                                {f"d{i}": f"double/{i}" for i in range(n)}, publish=True)
    return stages


def grouped(stages, names):
    for n in names:
        stages[n].group, stages[n].group_fn = tuple(names), toy.doubles
    return stages


def go(stages, ws, only=None, force=None, jobs=1, executor="local"):
    rows = dag.plan(stages, ws, only, force)
    run(stages, ws, dag.Context(device="cpu"), rows, Execution(executor, jobs))
    return {r["name"]: r for r in rows}


def calls(log):
    return log.read_text().split() if log.exists() else []


@pytest.fixture
def ws(tmp_path, monkeypatch):
    monkeypatch.setenv("TOY_CALL_LOG", str(tmp_path / "calls.log"))
    return Workspace(tmp_path / "ws")


def test_first_run_executes_all_then_everything_is_cached(ws, tmp_path):
    rows = go(graph(), ws)
    assert all(r["run"] and r["reason"] == "missing" for r in rows.values())
    assert (ws.root / "total.txt").read_text() == "6"
    rows = go(graph(), ws)
    assert not any(r["run"] for r in rows.values())
    assert sorted(calls(tmp_path / "calls.log")) == ["double"] * 3 + ["source", "total"]


def test_params_change_reruns_the_stage_and_downstream_only(ws, tmp_path):
    go(graph(), ws)
    stages = graph()
    stages["double/1"].params["i"] = 10
    rows = go(stages, ws)
    ran = {n for n, r in rows.items() if r["run"]}
    assert ran == {"double/1", "total"}
    assert rows["double/1"]["reason"] == "params changed: i 1->10"
    assert rows["total"]["reason"] == "upstream changed: double/1"
    stages = graph()
    stages["double/1"].params["i"] = [f"classify/real/b55/s{s}" for s in range(9)]
    rows = go(stages, ws)  # a long list, as a group's members, is given by its length
    assert rows["double/1"]["reason"] == "params changed: i 10->[9 items]"


def test_a_changed_setting_of_a_nested_table_is_named_by_its_path(ws):
    stages = {"src": dag.Stage("src", toy.source, {"value": 1, "cfg": {"steps": 3, "lr": 0.1}})}
    go(stages, ws)
    stages["src"].params["cfg"]["steps"] = 5
    (row,) = dag.plan(stages, ws)
    assert row["run"] and row["reason"] == "params changed: cfg.steps 3->5"


def test_upstream_change_propagates(ws):
    go(graph(value=1), ws)
    rows = go(graph(value=5), ws)
    assert all(r["run"] for r in rows.values())
    assert rows["src"]["reason"] == "params changed: value 1->5"
    assert rows["double/0"]["reason"] == "upstream changed: src"
    assert (ws.root / "total.txt").read_text() == "30"
    # going back to the old value hits the old cache entries
    rows = go(graph(value=1), ws)
    assert not any(r["run"] for r in rows.values())
    assert (ws.root / "total.txt").read_text() == "6"


def test_code_change_is_a_cache_miss(ws, tmp_path, monkeypatch):
    mod = tmp_path / "changing_stage.py"
    body = """
    from pathlib import Path
    def step(params, inputs, out, ctx):
        (out / "v.txt").write_text("{}")
        return {{}}
    """
    mod.write_text(textwrap.dedent(body.format("a")))
    monkeypatch.syspath_prepend(str(tmp_path))
    import changing_stage
    stages = {"s": dag.Stage("s", changing_stage.step, {})}
    assert go(stages, ws)["s"]["run"]
    assert not go(stages, ws)["s"]["run"]
    mod.write_text(textwrap.dedent(body.format("b")))
    changing_stage = importlib.reload(changing_stage)
    rows = go({"s": dag.Stage("s", changing_stage.step, {})}, ws)
    assert rows["s"]["run"] and rows["s"]["reason"] == "code changed"
    assert (ws.out("s", rows["s"]["key"]) / "v.txt").read_text() == "b"
    sys.modules.pop("changing_stage")


def test_code_modules_enter_the_key(ws):
    plain = dag.compute_keys({"s": dag.Stage("s", toy.source, {"value": 1})})
    with_mod = dag.compute_keys({"s": dag.Stage("s", toy.source, {"value": 1},
                                                code=("synthgap.data.splits",))})
    assert plain["s"]["key"] != with_mod["s"]["key"]


def test_code_key_follows_the_syntax_tree_of_what_the_stage_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "toypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    files = {
        "helper.py": "SCALE = 2  # the factor\n\ndef scale(x):\n    return SCALE * x\n",
        "other.py": "UNUSED = 1\n",
        "stage.py": textwrap.dedent('''\
            from toypkg.helper import scale

            OFFSET = 1


            def add(x):
                return x + OFFSET


            def unrelated():
                return 0


            def step(params, inputs, out, ctx):
                """Writes nothing."""
                from toypkg import other  # noqa: F401
                return {"v": add(scale(params["x"]))}
            '''),
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    import toypkg.stage

    def key():  # a stage's own top-level package is the code of its key
        return codehash.code_hash(dag.Stage("s", toypkg.stage.step))

    def edit(name, old, new):
        path = pkg / name
        path.write_text(path.read_text().replace(old, new))

    first = key()
    edit("helper.py", "# the factor", "# the factor, a comment edit")
    edit("stage.py", "Writes nothing.", "A docstring edit.")
    edit("stage.py", "return 0", "return 1")            # a function the stage does not use
    assert key() == first
    edit("helper.py", "SCALE = 2", "SCALE = 3")          # a constant of an imported module
    second = key()
    assert second != first
    edit("stage.py", "OFFSET = 1", "OFFSET = 5")         # a constant of its own module it uses
    third = key()
    assert third != second
    edit("other.py", "UNUSED = 1", "UNUSED = 2")         # a module imported inside the function
    assert key() != third
    sys.modules.pop("toypkg.stage"), sys.modules.pop("toypkg")


def test_failed_stage_leaves_nothing_done_and_next_run_cleans(ws):
    with pytest.raises(dag.StageError, match="double/0 failed: asked to fail"):
        go(graph(fail=True), ws)
    done = [p.parent.parent.name for p in ws.cache.glob("*/*/meta.json")]
    assert done == ["src"]
    leftovers = list(ws.cache.glob("*/.tmp-*"))
    assert len(leftovers) == 1 and (leftovers[0] / "partial.json").exists()
    assert ws.clean_leftovers() == leftovers
    assert not list(ws.cache.glob("*/.tmp-*"))
    rows = go(graph(), ws)
    assert not rows["src"]["run"] and rows["double/0"]["run"]


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_failure_is_one_line_on_screen_and_its_traceback_in_the_log(ws, jobs, capsys):
    rows = dag.plan(graph(fail=True), ws)
    log = RunLog(ws.root / "run.log", plain=True)
    with pytest.raises(dag.StageError):
        run(graph(fail=True), ws, dag.Context(device="cpu"), rows, Execution("local", jobs), log=log)
    screen = capsys.readouterr().out
    assert "FAILED double/" in screen and "Traceback" not in screen
    text = (ws.root / "run.log").read_text()
    assert "Traceback" in text and 'raise RuntimeError("asked to fail")' in text


def test_held_lock_protects_work_in_progress(ws):
    go(graph(), ws)
    tmp = ws.cache / "double" / ".tmp-abc"
    tmp.mkdir()
    with ws.stage_lock("double", "abc"):
        assert ws.clean_leftovers() == []
    assert tmp.exists()
    assert ws.clean_leftovers() == [tmp]


def test_force_and_only(ws, tmp_path):
    go(graph(), ws)
    log = tmp_path / "calls.log"
    log.unlink()
    rows = go(graph(), ws, force=["double/*"])
    assert {n for n, r in rows.items() if r["run"]} == {"double/0", "double/1", "double/2"}
    assert sorted(calls(log)) == ["double"] * 3
    rows = dag.plan(graph(value=2), ws, only=["double/1"])
    assert [r["name"] for r in rows] == ["src", "double/1"]
    with pytest.raises(ValueError, match="matches no stage"):
        dag.plan(graph(), ws, only=["nothing*"])


def test_parallel_jobs_give_the_same_outputs(ws, tmp_path):
    rows = go(graph(n=4), ws, jobs=2)
    assert (ws.root / "total.txt").read_text() == "8"
    metas = [json.loads(p.read_text()) for p in ws.cache.glob("*/*/meta.json")]
    assert len(metas) == 6 and all(m["key"] == rows[m["name"]]["key"] for m in metas)


def running(pid):
    """Whether process `pid` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_workers_end_when_the_runner_is_killed(tmp_path):
    pid_file = tmp_path / "worker.pid"
    here = Path(__file__).resolve().parent
    script = textwrap.dedent(f"""
        import sys
        sys.path[:0] = [{str(here.parent)!r}, {str(here)!r}]
        import toy_stages as toy
        from synthgap.runner import dag
        from synthgap.runner.run import Execution, RunLog, run
        from synthgap.runner.workspace import Workspace
        stages = {{"sleep": dag.Stage("sleep", toy.sleeper, {{"pid_file": {str(pid_file)!r},
                                                             "seconds": 120}})}}
        ws = Workspace({str(tmp_path / "ws")!r})
        run(stages, ws, dag.Context(device="cpu"), dag.plan(stages, ws, None, None),
            Execution(jobs=2))
    """)
    runner = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 60
    while not pid_file.exists() and time.time() < deadline and runner.poll() is None:
        time.sleep(0.1)
    assert pid_file.exists(), "the stage never started"
    worker = int(pid_file.read_text())
    assert running(worker)
    runner.kill()                  # SIGKILL: the runner cannot pass anything on to its workers
    runner.wait()
    deadline = time.time() + 10
    while running(worker) and time.time() < deadline:
        time.sleep(0.1)
    alive = running(worker)
    if alive:
        subprocess.run(["kill", "-9", str(worker)])
    assert not alive, "the worker outlived its runner"


def test_cycle_and_missing_dependency_are_errors():
    stages = {"a": dag.Stage("a", toy.source, {}, {"x": "b"}),
              "b": dag.Stage("b", toy.source, {}, {"x": "a"})}
    with pytest.raises(ValueError, match="cycle"):
        dag.topo_order(stages)
    with pytest.raises(ValueError, match="needs c"):
        dag.topo_order({"a": dag.Stage("a", toy.source, {}, {"x": "c"})})


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_group_runs_in_one_call_and_each_member_is_cached_alone(ws, tmp_path, jobs):
    log = tmp_path / "calls.log"
    stages = grouped(graph(n=3), ["double/0", "double/1"])
    go(stages, ws, jobs=jobs)
    # `doubles` logs itself, then each `double` it runs
    assert sorted(calls(log)) == ["double"] * 3 + ["doubles:0,1", "source", "total"]
    assert (ws.root / "total.txt").read_text() == "6"
    rows = go(stages, ws, jobs=jobs)
    assert not any(r["run"] for r in rows.values())
    meta = ws.meta("double", rows["double/1"]["key"])
    assert meta["group"] == ["double/0", "double/1"] and meta["metrics"] == {"value": 2}
    # one member lost: the whole group is computed again (so the result is the same as in a full
    # group), the member that was intact keeps its output
    kept = ws.out("double", rows["double/1"]["key"]) / "meta.json"
    before = kept.stat().st_mtime_ns
    shutil.rmtree(ws.out("double", rows["double/0"]["key"]))
    log.unlink()
    rows = go(stages, ws, jobs=jobs)
    assert [n for n, r in rows.items() if r["run"]] == ["double/0"]
    assert calls(log) == ["doubles:0,1", "double", "double"]
    assert kept.stat().st_mtime_ns == before


def test_only_brings_the_whole_group(ws, tmp_path):
    stages = grouped(graph(n=3), ["double/0", "double/1"])
    rows = go(stages, ws, only=["double/1"])
    assert sorted(rows) == ["double/0", "double/1", "src"]
    assert calls(tmp_path / "calls.log") == ["source", "doubles:0,1", "double", "double"]


def test_a_run_environment_in_the_key_reruns_and_says_why(ws):
    stages = graph(n=1)
    go(stages, ws)
    one, two = {"threads": 1, "device": "cpu"}, {"threads": 2, "device": "cpu"}
    rows = {r["name"]: r for r in dag.plan(stages, ws, env=one)}
    assert all(r["run"] for r in rows.values())  # no env before: other keys
    run(stages, ws, dag.Context(device="cpu", threads=1), list(rows.values()))
    assert not any(r["run"] for r in dag.plan(stages, ws, env=one))
    again = {r["name"]: r for r in dag.plan(stages, ws, env=two)}
    assert again["src"]["run"] and "threads 1->2" in again["src"]["reason"]
    meta = ws.meta("src", rows["src"]["key"])
    assert meta["env"] == one and meta["ran"]["threads"] == 1


def test_a_group_waits_for_the_inputs_of_every_member_even_one_by_one(ws):
    """A group's members may need inputs that the topological order puts after the first member:
    the unit runs once all of them are done, whatever the executor."""
    stages = {"src0": dag.Stage("src0", toy.source, {"value": 1}),
              "a": dag.Stage("a", toy.double, {"i": 0}, {"x": "src0"}),
              "src1": dag.Stage("src1", toy.source, {"value": 10}),
              "b": dag.Stage("b", toy.double, {"i": 1}, {"x": "src1"})}
    stages["total"] = dag.Stage("total", toy.total, {}, {"a": "a", "b": "b"}, publish=True)
    assert dag.topo_order(stages) == ["src0", "a", "src1", "b", "total"]
    grouped(stages, ["a", "b"])
    go(stages, ws, jobs=1)
    assert (ws.root / "total.txt").read_text() == "22"


def test_a_network_stage_asks_the_cluster_for_a_gpu():
    from synthgap.runner.build import Unit
    from synthgap.runner.cluster import resources
    from synthgap.runner.run import RunnerConfig

    runner = RunnerConfig(ray_cpus={"fit": 2.0}, ray_gpus=0.5)

    def unit(name, network):
        return Unit([dag.Stage(name, toy.source, {}, network=network)], [{}], [{}], dag.Context())

    assert resources(unit("fit/a", True), runner, gpus=True) == {"num_cpus": 2.0, "num_gpus": 0.5}
    assert resources(unit("fit/a", True), runner, gpus=False) == {"num_cpus": 2.0}
    assert resources(unit("src", False), runner, gpus=True) == {"num_cpus": 1.0}
