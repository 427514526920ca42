"""End to end through the command line, on tiny settings of the smoke experiment."""

import csv
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import ROOT, SMOKE_ONE, cmd, pipeline, report_of, run_smoke

TINY = ["--set", "experiment.budgets=[20, 60]", "--set", "experiment.mixtures=[\"real\"]", "--set", "classifier.width=4",
        "--set", "classifier.batch_size=32"]


def published(work) -> Path:
    """Where the newest run in `work` published its report: a --set run's variants/<name>/."""
    found = sorted(Path(work).glob("variants/*/results.csv"), key=lambda p: p.stat().st_mtime)
    return found[-1].parent if found else Path(work)


def stages_run(proc) -> int:
    return int(re.search(r"(\d+) stage\(s\) run", proc.stdout).group(1))


def done_stages(work: Path) -> dict[str, str]:
    out = {}
    for meta in work.glob("cache/*/*/meta.json"):
        m = json.loads(meta.read_text())
        assert m["name"] not in out, f"{m['name']} done twice"
        out[m["name"]] = m["key"]
    return out


def test_report_computes_nothing_and_a_set_run_leaves_the_default_alone(tmp_path):
    exp = tmp_path / "tiny.toml"
    exp.write_text('base = "smoke"\n[experiment]\nbudgets = [20]\nseeds = [0]\nmixtures = ["real"]\n'
                   '[classifier]\nsteps = 20\nwidth = 4\n')
    work = tmp_path / "w"
    empty = pipeline("report", str(exp), "--workdir", str(work), check=False)
    assert empty.returncode == 1 and "4 of 4 stages the report needs are not in" in empty.stdout
    assert "classify/real/b20/s0" in empty.stdout and not list(work.glob("cache/*/*/meta.json"))
    pipeline("run", str(exp), "--workdir", str(work))
    summary = (work / "summary.csv").read_bytes()
    variant = pipeline("run", str(exp), "--set", "classifier.steps=25", "--name", "longer",
                       "--workdir", str(work))
    assert f"report in {work / 'variants' / 'longer'}" in variant.stdout
    assert (work / "summary.csv").read_bytes() == summary
    assert (work / "variants" / "longer" / "summary.csv").read_bytes() != summary
    cells = pipeline("run", str(exp), "--set", "classifier.steps=30", "--name", "cells", "--only",
                     "classify/*", "--workdir", str(work))  # no report stage: none is promised
    assert "1 stage(s) run" in cells.stdout and "report in" not in cells.stdout
    assert not (work / "variants" / "cells").exists()
    report = pipeline("report", str(exp), "--workdir", str(work))
    assert "stage(s) run" not in report.stdout and (work / "summary.csv").read_bytes() == summary


def test_verify_names_a_truncated_output_and_the_run_rebuilds_it(tmp_path):
    work = str(tmp_path)
    pipeline("run", "smoke", *TINY, "--set", "classifier.steps=30", "--workdir", work)
    results = (published(tmp_path) / "results.csv").read_text()
    assert "11 cached stage(s) checked" in pipeline("verify", "smoke", "--workdir", work).stdout
    target = sorted(tmp_path.glob("cache/budget/*/budget.npz"))[0]
    name = json.loads((target.parent / "meta.json").read_text())["name"]
    target.write_bytes(target.read_bytes()[:100])
    bad = pipeline("verify", "smoke", "--workdir", work, check=False)
    assert bad.returncode == 1 and f"damaged: {name} (budget/" in bad.stdout
    assert "budget.npz" in bad.stdout and "1 damaged" in bad.stdout
    again = pipeline("run", "smoke", *TINY, "--set", "classifier.steps=30", "--workdir", work)
    assert stages_run(again) == 3  # the budget, its cell and the report
    assert (published(tmp_path) / "results.csv").read_text() == results
    assert "0 damaged" in pipeline("verify", "smoke", "--workdir", work).stdout


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
        assert (published(tmp_path) / name).is_file()
    assert list((published(tmp_path) / "tb" / "study").glob("events.out.tfevents.*"))
    rows = (published(tmp_path) / "results.csv").read_text().splitlines()
    assert rows[0].startswith("mixture,budget,seed,test_error") and len(rows) == 5
    assert all(0 <= float(r.split(",")[3]) <= 1 for r in rows[1:])

    # stdout is not a terminal here: one plain line per stage started and finished, also in run.log
    done = [line for line in first.stdout.splitlines() if " done   " in line]
    assert len(done) == 11 and any("classify/real/b20/s0" in d and "test_error" in d for d in done)
    assert len([line for line in first.stdout.splitlines() if " start  " in line]) == 11
    log = (tmp_path / "run.log").read_text()
    assert all(line in log for line in done) and "smoke: 11 stage(s) run" in log

    again = pipeline("run", "smoke", *TINY, "--set", "classifier.steps=30", "--workdir", work)
    assert stages_run(again) == 0

    dry = pipeline("run", "smoke", *TINY, "--set", "classifier.steps=40", "--workdir", work,
                   "--dry-run")
    assert "5 of 11 stages would run" in dry.stdout
    assert "params changed: classifier.steps 30->40" in dry.stdout
    assert "upstream changed" in dry.stdout
    before = _all_metas(tmp_path)

    changed = pipeline("run", "smoke", *TINY, "--set", "classifier.steps=40", "--workdir", work)
    assert stages_run(changed) == 5
    new = {n for n, t in _all_metas(tmp_path).items() if t > before[n]}
    assert new == {"classify/real/b20/s0", "classify/real/b20/s1", "classify/real/b60/s0",
                   "classify/real/b60/s1", "report"}
    assert "40" in (published(tmp_path) / "results.csv").read_text().splitlines()[1].split(",")[-1]

    status = pipeline("status", "smoke", *TINY, "--set", "classifier.steps=40", "--workdir", work)
    assert "11 of 11 stages done" in status.stdout and "made with" not in status.stdout
    # a stage made under another torch: done, and said so
    path = next(tmp_path.glob("cache/split/*/meta.json"))
    meta = json.loads(path.read_text())
    assert meta["ran"]["threads"] == meta["env"]["threads"] == 1 and meta["env"]["device"] == "cpu"
    meta["ran"]["torch"] = "0.1"
    path.write_text(json.dumps(meta))
    status = pipeline("status", "smoke", *TINY, "--set", "classifier.steps=40", "--workdir", work,
                      "--device", "cpu")
    assert "11 of 11 stages done" in status.stdout
    assert "torch 0.1" in " ".join(status.stdout.split())


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
    assert (published(work) / "results.csv").read_text() == \
        (published(reference) / "results.csv").read_text()


def test_jobs_change_no_result(tmp_path, smoke_jobs1):
    """--jobs 2 runs two stages at a time, each with the threads of `[runner]`, as --jobs 1 does."""
    run_smoke(tmp_path, "--jobs", "2")
    for name in ("results.csv", "gap.csv"):
        assert (report_of(tmp_path) / name).read_bytes() == (smoke_jobs1 / name).read_bytes()


def test_sigkill_under_two_jobs_then_resume_under_one_gives_the_same_results(tmp_path,
                                                                          smoke_jobs1):
    proc = subprocess.Popen(cmd("run", "smoke", *SMOKE_ONE, "--jobs", "2", "--workdir",
                                str(tmp_path)), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while len(list(tmp_path.glob("cache/classify/*/meta.json"))) < 2 and time.time() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and its workers
    proc.wait()
    done = done_stages(tmp_path)
    assert 2 <= len([n for n in done if n.startswith("classify")]) < 8 and "report" not in done
    run_smoke(tmp_path, "--jobs", "1")
    for name in ("results.csv", "gap.csv"):
        assert (report_of(tmp_path) / name).read_bytes() == (smoke_jobs1 / name).read_bytes()


def test_two_concurrent_runs_share_one_workspace_safely(tmp_path, reference):
    work = tmp_path / "w"
    args = cmd("run", "smoke", *TINY, "--set", "classifier.steps=400", "--workdir", str(work))
    procs = [subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert len(done_stages(work)) == 11  # each stage built once, none twice
    assert not list(work.glob("cache/*/.tmp-*"))
    assert (published(work) / "results.csv").read_text() == \
        (published(reference) / "results.csv").read_text()


def test_jobs_two_runs_the_graph_in_parallel(tmp_path):
    proc = pipeline("run", "smoke", *TINY, "--set", "classifier.steps=30", "--jobs", "2",
                    "--workdir", str(tmp_path))
    assert stages_run(proc) == 11
    assert len((published(tmp_path) / "results.csv").read_text().splitlines()) == 5


def test_every_mixture_runs_and_reports_its_sources(tmp_path):
    work = tmp_path / "w"
    pipeline("run", "smoke", "--set", "experiment.budgets=[20]", "--set", "experiment.seeds=[0]",
             "--set", "experiment.synthetic_total=300", "--set", "composites.count=100",
             "--set", "classifier.steps=20", "--set", "classifier.width=4", "--set", "refiner.steps=4",
             "--set", "refiner.sem_steps=4", "--set", "refiner.log_every=2",
             "--set", "refiner.warp=true", "--set", "refiner.variants=2", "--set", "gap.steps=5",
             "--set", "gap.samples=100", "--set", "oracle.steps=100", "--workdir", str(work))
    rows = (published(work) / "results.csv").read_text().splitlines()[1:]
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
    events = EventAccumulator(str(published(work) / "tb" / "study"))
    events.Reload()
    # each mixture (and gap source) is a run of its own, so each curve has its own colour, and
    # one custom-scalars layout overlays the runs' error curves (and each instrument's gap)
    from tensorboard.plugins.custom_scalar import layout_pb2
    layout = layout_pb2.Layout.FromString(events.Tensors("custom_scalars__config__")[0]
                                          .tensor_proto.string_val[0])
    charts = {c.title: list(c.multiline.tag) for cat in layout.category for c in cat.chart}
    assert any(tags == ["^error$"] for tags in charts.values())
    assert any(tags == ["^gap/c2st\\-pixel$"] for tags in charts.values())
    assert {p.name for p in (published(work) / "tb" / "mixtures").iterdir()} == set(by_mixture)
    real = EventAccumulator(str(published(work) / "tb" / "mixtures" / "real")).Reload()
    assert [e.step for e in real.Scalars("error")] == [130]  # 100·log10(20)
    refined = EventAccumulator(str(published(work) / "tb" / "sources" / "refined")).Reload()
    assert [e.step for e in refined.Scalars("gap/c2st-pixel")] == [130]
    # every cell is a row of the HParams dashboard
    from tensorboard.plugins.hparams import plugin_data_pb2
    for mixture in by_mixture:
        cell = EventAccumulator(str(published(work) / "tb" / "cells" / f"{mixture}-b20-s0"))
        cell.Reload()
        start = plugin_data_pb2.HParamsPluginData.FromString(
            cell.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info
        assert start.hparams["mixture"].string_value == mixture
        assert start.hparams["budget"].number_value == 20
        assert cell.Scalars("hparam/test_error")[0].value == pytest.approx(
            float(by_mixture[mixture][3]), abs=1e-6)
    results_md = (published(work) / "results.md").read_text()
    assert "| real+gan | " in results_md and "## Real/synthetic gap" in results_md
    assert "| refined | 20 | " in results_md
    pairs = {(r["mixture"], r["against"]): r for r in csv.DictReader(
        (published(work) / "paired.csv").read_text().splitlines())}  # one seed: no interval
    assert float(pairs["real+gan", "real+font"]["mean_difference"]) == pytest.approx(
        float(by_mixture["real+gan"][3]) - float(by_mixture["real+font"][3]), abs=2e-6)
    assert "| real+gan | real+font | " in results_md
    d_row = next(line for line in results_md.splitlines() if line.startswith("| b20 | "))
    logs, outside, _, held, _ = (c.strip() for c in d_row.split("|")[2:7])
    assert int(logs) >= 1 and "–" in outside and "–" in held  # both measures, every log
    assert {"samples/real", "samples/font", "samples/composite-hard", "samples/composite-poisson",
            "samples/composite-gaussian", "samples/refined-b20", "samples/tone-b20",
            "error_vs_data"} \
        <= set(events.Tags()["images"])
    assert {"refiner/label_retention", "refiner/label_agreement",
            "refiner/retention_of_read_renders"} <= set(events.Tags()["scalars"])
    m = next(json.loads(p.read_text()) for p in work.glob("cache/refine/*/meta.json"))["metrics"]
    assert 0 <= m["label_retention"] <= 1 and 0 <= m["label_agreement"] <= 1
    # retention can drop below the oracle's accuracy on the renders only by changed readings
    assert m["label_retention"] >= m["oracle_accuracy_on_renders"] - (1 - m["label_agreement"])
    # the renders read right and kept make up part of the retention, the rest are renders G fixed
    kept = m["oracle_accuracy_on_renders"] * m["retention_of_read_renders"]
    assert m["label_retention"] >= kept - 1e-9
    losses = EventAccumulator(str(published(work) / "tb" / "refiner-b20"))
    losses.Reload()
    assert {"refiner/gan_G", "refiner/cycle", "refiner/D_real", "refiner/d_accuracy",
            "refiner/d_accuracy_val", "refiner/field_px", "refiner/smooth"} \
        <= set(losses.Tags()["scalars"])
    assert len(losses.Scalars("refiner/cycle")) == 2 and losses.Tags()["images"]
    gap = [r.split(",") for r in (published(work) / "gap.csv").read_text().splitlines()]
    assert gap[0][:8] == ["instrument", "source", "budget", "auc", "auc_ci_low", "auc_ci_high",
                          "accuracy", "p_value"]
    assert {(r[1], r[2]) for r in gap[1:]} == {
        ("real-control", ""), ("font", ""), ("composite-hard", ""), ("composite-gaussian", ""),
        ("composite-poisson", ""), ("refined", "20"), ("tone", "20")}
    assert {r[0] for r in gap[1:]} == {"c2st-pixel", "c2st-fourier", "c2st-grey", "svdd"}
    tone = next(json.loads(p.read_text()) for p in work.glob("cache/tone/*/meta.json"))["metrics"]
    assert 0 <= tone["label_retention"] <= 1
    assert all(0 <= float(r[3]) <= 1 and float(r[8]) >= 0 for r in gap[1:])
    plots = published(work) / "plots"
    assert (plots / "gap_vs_budget.png").is_file() and (plots / "d_accuracy.png").is_file()
    for source, tag in (("font", "gap/c2st-pixel"), ("refined", "gap/svdd"),
                        ("real-control", "gap/frechet")):
        run = EventAccumulator(str(published(work) / "tb" / "sources" / source)).Reload()
        assert tag in run.Tags()["scalars"]
