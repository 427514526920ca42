"""End to end through the command line, on tiny settings of the smoke experiment."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--set", "experiment.budgets=[20, 60]", "--set", "experiment.mixtures=[\"real\"]", "--set", "classifier.width=4",
        "--set", "classifier.batch_size=32"]


def cmd(*args):
    return [sys.executable, "-m", "pipeline", *args]


def pipeline(*args, check=True):
    proc = subprocess.run(cmd(*args), cwd=ROOT, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"pipeline {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def stages_run(proc) -> int:
    return int(re.search(r"(\d+) stage\(s\) run", proc.stdout).group(1))


def done_stages(work: Path) -> dict[str, str]:
    out = {}
    for meta in work.glob("cache/*/*/meta.json"):
        m = json.loads(meta.read_text())
        assert m["name"] not in out, f"{m['name']} done twice"
        out[m["name"]] = m["key"]
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run with 400 classifier steps (long enough to be killed mid-stage)."""
    work = tmp_path_factory.mktemp("ref")
    pipeline("run", "smoke", *TINY, "--set", "classifier.steps=400", "--workdir", str(work))
    return work


def test_run_then_rerun_is_cached_and_set_reruns_only_classify(tmp_path):
    work = str(tmp_path)
    first = pipeline("run", "smoke", *TINY, "--set", "classifier.steps=30", "--workdir", work)
    assert stages_run(first) == 11
    for name in ("results.csv", "summary.csv", "plots/error_vs_data.png"):
        assert (tmp_path / name).is_file()
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    rows = (tmp_path / "results.csv").read_text().splitlines()
    assert rows[0].startswith("mixture,budget,seed,test_error") and len(rows) == 5
    assert all(0 <= float(r.split(",")[3]) <= 1 for r in rows[1:])

    again = pipeline("run", "smoke", *TINY, "--set", "classifier.steps=30", "--workdir", work)
    assert stages_run(again) == 0

    dry = pipeline("run", "smoke", *TINY, "--set", "classifier.steps=40", "--workdir", work,
                   "--dry-run")
    assert "5 of 11 stages would run" in dry.stdout
    assert "params changed: steps 30->40" in dry.stdout
    assert "upstream changed" in dry.stdout
    before = _all_metas(tmp_path)

    changed = pipeline("run", "smoke", *TINY, "--set", "classifier.steps=40", "--workdir", work)
    assert stages_run(changed) == 5
    new = {n for n, t in _all_metas(tmp_path).items() if t > before[n]}
    assert new == {"classify/real/b20/s0", "classify/real/b20/s1", "classify/real/b60/s0",
                   "classify/real/b60/s1", "report"}
    assert "40" in (tmp_path / "results.csv").read_text().splitlines()[1].split(",")[-1]

    status = pipeline("status", "smoke", *TINY, "--set", "classifier.steps=40", "--workdir", work)
    assert "11 of 11 stages done" in status.stdout


def _all_metas(work):
    """stage name -> time its newest output finished"""
    latest = {}
    for meta in work.glob("cache/*/*/meta.json"):
        m = json.loads(meta.read_text())
        latest[m["name"]] = max(latest.get(m["name"], 0), m["finished"])
    return latest


def test_sigkill_mid_stage_then_resume_gives_the_same_results(tmp_path, reference):
    work = tmp_path / "w"
    args = cmd("run", "smoke", *TINY, "--set", "classifier.steps=400", "--workdir", str(work))
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list(work.glob("cache/classify/.tmp-*")) and time.time() < deadline:
        time.sleep(0.02)
    assert list(work.glob("cache/classify/.tmp-*")), "classify never started"
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = done_stages(work)
    assert "report" not in done and len([n for n in done if n.startswith("classify")]) < 4
    for kind_key in work.glob("cache/classify/*/meta.json"):  # done means complete
        assert (kind_key.parent / "model.safetensors").stat().st_size > 0
    assert list(work.glob("cache/classify/.tmp-*")), "the killed stage left its temporary folder"

    resumed = pipeline("run", "smoke", *TINY, "--set", "classifier.steps=400", "--workdir",
                       str(work))
    assert "cleaned 1 leftover" in resumed.stdout
    assert stages_run(resumed) == 11 - len(done)
    assert not list(work.glob("cache/*/.tmp-*"))
    assert (work / "results.csv").read_text() == (reference / "results.csv").read_text()


def test_two_concurrent_runs_share_one_workspace_safely(tmp_path, reference):
    work = tmp_path / "w"
    args = cmd("run", "smoke", *TINY, "--set", "classifier.steps=400", "--workdir", str(work))
    procs = [subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert len(done_stages(work)) == 11  # each stage built once, none twice
    assert not list(work.glob("cache/*/.tmp-*"))
    assert (work / "results.csv").read_text() == (reference / "results.csv").read_text()


def test_jobs_two_runs_the_graph_in_parallel(tmp_path):
    proc = pipeline("run", "smoke", *TINY, "--set", "classifier.steps=30", "--jobs", "2",
                    "--workdir", str(tmp_path))
    assert stages_run(proc) == 11
    assert len((tmp_path / "results.csv").read_text().splitlines()) == 5


@pytest.mark.parametrize("args, message", [
    (["--set", "classifier.stepz=3"], "unknown key 'classifier.stepz'; did you mean 'steps'? valid keys: "),
    (["--set", "classifier.steps=many"], "is not an integer"),
    (["--set", "classifier.lr=true"], "is not a number"),
    (["--set", "steps"], "is not key=value"),
    (["--set", "experiment.budgets=[0]"], "experiment.budgets must lie in"),
    (["--only", "nothing*"], "matches no stage"),
])
def test_bad_options_give_one_line_and_exit_2(tmp_path, args, message):
    proc = pipeline("run", "smoke", *args, "--workdir", str(tmp_path / "w"), check=False)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not (tmp_path / "w").exists()
    if "unknown key" in message:
        assert "classifier.steps" in lines[0]


def test_unknown_experiment_and_list_and_dag():
    proc = pipeline("run", "nosuch", check=False)
    assert proc.returncode == 2 and "unknown experiment 'nosuch'" in proc.stderr
    listing = pipeline("list").stdout
    assert "smoke" in listing and "mnist-sweep" in listing
    text = pipeline("dag", "smoke").stdout.splitlines()
    assert text[0] == "mnist" and any(line.startswith("report  <- ") for line in text)
    mermaid = pipeline("dag", "mnist-sweep", "--format", "mermaid").stdout
    assert mermaid.startswith("graph LR") and mermaid.count("-->") == 490  # see below
    # 1 mnist->split, 12 split->budget, 96 cells x (budget, mnist), 84 synthetic sources->cells
    # (7 mixtures x 12), 3 fonts->composites, 2 into oracle, 4 tone x (budget, fonts, oracle),
    # 4 refiners x (budget, fonts), 4 refine x (refiner, fonts, oracle), 12 gap stages x (source,
    # split, oracle) + the control's (split, oracle), 126 into report (96 cells, 29 render, tone,
    # refiner and gap stages, split)
    assert 1 + 12 + 192 + 84 + 3 + 2 + 12 + 8 + 12 + 38 + 126 == 490
    per_seed = pipeline("dag", "mnist-sweep", "--set", "refiner.per_seed=true").stdout.splitlines()
    for b in (55, 385, 5500, 38500):
        for s in (0, 1, 2):
            assert f"train_refiner/b{b}/s{s}  <- budget/b{b}/s{s}, render_fonts" in per_seed
            assert any(line.startswith(f"classify/real+gan/b{b}/s{s}  <- ") and f"refine/b{b}/s{s}"
                       in line for line in per_seed)
        assert any(line.startswith(f"gap/refined/b{b}  <- ") and f"refine/b{b}/s0" in line
                   for line in per_seed)
    dot = pipeline("dag", "smoke", "--format", "dot").stdout
    assert dot.startswith("digraph") and '"classify/real/b55/s0"' in dot


def test_oracle_takes_its_own_classifier_overrides():
    from graph import UserError, build_graph
    from pipeline import load_config
    _, cfg = load_config("mnist-sweep", ["oracle.steps=123"])
    stages = build_graph("mnist-sweep", cfg)
    assert stages["oracle"].params["steps"] == 123
    assert stages["oracle"].params["width"] == cfg["classifier"]["width"]
    assert stages["classify/real/b55/s0"].params["steps"] == cfg["classifier"]["steps"] != 123
    with pytest.raises(UserError, match=r"unknown key 'oracle.stepz'"):
        load_config("mnist-sweep", ["oracle.stepz=1"])


def test_every_mixture_runs_and_reports_its_sources(tmp_path):
    work = tmp_path / "w"
    pipeline("run", "smoke", "--set", "experiment.budgets=[20]", "--set", "experiment.seeds=[0]",
             "--set", "experiment.synthetic_total=300", "--set", "composites.count=100",
             "--set", "classifier.steps=20", "--set", "classifier.width=4", "--set", "refiner.steps=4",
             "--set", "refiner.sem_steps=4", "--set", "refiner.log_every=2",
             "--set", "refiner.warp=true", "--set", "refiner.variants=2", "--workdir", str(work))
    rows = (work / "results.csv").read_text().splitlines()[1:]
    by_mixture = {r.split(",")[0]: r.split(",") for r in rows}
    assert sorted(by_mixture) == ["font", "gan", "real", "real+composite", "real+font", "real+gan",
                                  "real+tone", "tone"]
    assert by_mixture["font"][4:6] == ["0", "280"]          # n_real, n_synthetic = T - b
    assert by_mixture["gan"][4:6] == ["0", "560"]           # two refined variants of each render
    assert by_mixture["tone"][4:6] == ["0", "280"]
    assert by_mixture["real+font"][4:6] == ["20", "280"]
    assert by_mixture["real+gan"][4:6] == ["20", "560"]
    assert by_mixture["real+tone"][4:6] == ["20", "280"]
    assert by_mixture["real+composite"][4:6] == ["20", "100"]
    meta = next(json.loads(p.read_text()) for p in work.glob("cache/render_fonts/*/meta.json"))
    fonts = meta["metrics"]["fonts"]
    assert len(fonts) >= 20 and all(len(f["sha256"]) == 64 and f["family"] for f in fonts)
    assert sorted(p.parent.name for p in work.glob("cache/render_composites/*/composites.npz")) \
        and len(list(work.glob("cache/render_composites/*/meta.json"))) == 3
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(work / "tb"))
    events.Reload()
    assert {"samples/real", "samples/font", "samples/composite-hard", "samples/composite-poisson",
            "samples/composite-gaussian", "samples/refined-b20", "samples/tone-b20",
            "error_vs_data"} \
        <= set(events.Tags()["images"])
    assert {"error/real", "error/font", "error/real+font", "error/gan", "error/real+gan",
            "refiner/label_retention", "refiner/label_agreement",
            "refiner/retention_of_read_renders"} <= set(events.Tags()["scalars"])
    m = next(json.loads(p.read_text()) for p in work.glob("cache/refine/*/meta.json"))["metrics"]
    assert 0 <= m["label_retention"] <= 1 and 0 <= m["label_agreement"] <= 1
    # retention can drop below the oracle's accuracy on the renders only by changed readings
    assert m["label_retention"] >= m["oracle_accuracy_on_renders"] - (1 - m["label_agreement"])
    # the renders read right and kept make up part of the retention, the rest are renders G fixed
    kept = m["oracle_accuracy_on_renders"] * m["retention_of_read_renders"]
    assert m["label_retention"] >= kept - 1e-9
    losses = EventAccumulator(str(work / "tb" / "train_refiner-b20"))
    losses.Reload()
    assert {"refiner/gan_G", "refiner/cycle", "refiner/D_real", "refiner/d_accuracy",
            "refiner/field_px", "refiner/smooth"} <= set(losses.Tags()["scalars"])
    assert len(losses.Scalars("refiner/cycle")) == 2 and losses.Tags()["images"]
    gap = [r.split(",") for r in (work / "gap.csv").read_text().splitlines()]
    assert gap[0][:8] == ["instrument", "source", "budget", "auc", "auc_ci_low", "auc_ci_high",
                          "accuracy", "p_value"]
    assert {(r[1], r[2]) for r in gap[1:]} == {
        ("real-control", ""), ("font", ""), ("composite-hard", ""), ("composite-gaussian", ""),
        ("composite-poisson", ""), ("refined", "20"), ("tone", "20")}
    assert {r[0] for r in gap[1:]} == {"c2st-pixel", "c2st-fourier", "c2st-grey", "svdd"}
    tone = next(json.loads(p.read_text()) for p in work.glob("cache/tone/*/meta.json"))["metrics"]
    assert 0 <= tone["label_retention"] <= 1
    assert all(0 <= float(r[3]) <= 1 and float(r[8]) >= 0 for r in gap[1:])
    assert (work / "plots" / "gap_vs_budget.png").is_file() and (work / "plots" / "d_accuracy.png").is_file()
    assert {"gap/c2st-pixel/font", "gap/svdd/refined", "gap/frechet/real-control"} \
        <= set(events.Tags()["scalars"])
