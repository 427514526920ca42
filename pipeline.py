"""synthgap's command line: run an experiment's stage graph, inspect it, and report.

    pipeline run mnist-sweep            run (or resume) the study; cached stages are skipped
    pipeline run smoke --dry-run        say which stages would run, and why
    pipeline status smoke               what is done, what is stale
    pipeline dag smoke --format mermaid the stage graph
"""

from __future__ import annotations

import hashlib
import re
import sys
import time
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from synthgap.devices import resolve_precision, run_device
from synthgap.errors import UserError, fail
from synthgap.runner import dag
from synthgap.runner.run import Execution, RunLog, run as run_stages, run_env
from synthgap.runner.workspace import Workspace
from synthgap.study import config
from synthgap.study.graph import build_graph

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False)
from renderers.cli import app as render_app  # noqa: E402

from classifiers.cli import detect_cmd  # noqa: E402
from gan.cli import refine_cmd, train_refiner_cmd  # noqa: E402

app.add_typer(render_app, name="render")
app.command("train-refiner")(train_refiner_cmd)
app.command("refine")(refine_cmd)
app.command("detect")(detect_cmd)
console = Console()


# -------------------------------------------------------------------------------------- configs
def setup(exp: str, sets, workdir: Optional[Path]):
    """(name, config, stage graph, workspace) of an experiment with its --set overrides."""
    name, cfg = config.load(exp, sets)
    return name, cfg, build_graph(name, cfg), Workspace(workdir or Path("runs") / name)


def plan(stages, ws: Workspace, cfg, device: str, only=None, force=None) -> list[dict]:
    """The runner's plan of the graph, with the run's environment in every key."""
    precision, _ = resolve_precision(cfg.runner.cpu_precision, device)
    return dag.plan(stages, ws, only, force, run_env(cfg.runner.threads, device, precision))


def print_results(folder: Path) -> None:
    """The terminal tables of a published report: test error (summary.csv) and the gap (gap.csv)."""
    from synthgap.study.report import gap_table, summary_table

    for table in (summary_table(folder / "summary.csv"), gap_table(folder / "gap.csv")):
        if table is not None:
            console.print(table)


# ------------------------------------------------------------------------------------- commands
class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Executor(str, Enum):
    local = "local"
    ray = "ray"


class Format(str, Enum):
    text = "text"
    mermaid = "mermaid"
    dot = "dot"


WORKDIR = typer.Option(None, "--workdir", help="Workspace folder (default: runs/<experiment>).")
SETS = typer.Option(None, "--set", help="Override a config value: --set classifier.steps=500.")
NAME = typer.Option(None, "--name", help="With --set: the variant's name; its report goes to "
                    "<workdir>/variants/NAME (default: a short hash of the overrides).")


def report_dir(ws: Workspace, sets, name: str | None) -> Path:
    """Where a run publishes its report: the workspace root for the config as it is; a run with
    --set publishes into variants/<name> (the cache stays shared), leaving the default's alone."""
    if name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise UserError(f"--name {name!r}: use letters, digits, '.', '_' and '-'")
    if not sets:
        return ws.root
    label = name or hashlib.sha256("\n".join(sorted(sets)).encode()).hexdigest()[:8]
    return ws.root / "variants" / label


@app.command()
def run(exp: str = typer.Argument(..., help="Experiment name in configs/ (or a .toml path)."),
        set_: Optional[List[str]] = SETS,
        dry_run: bool = typer.Option(False, "--dry-run", help="Say what would run and why; run nothing."),
        force: Optional[List[str]] = typer.Option(None, "--force", help="Rerun stages matching GLOB."),
        only: Optional[List[str]] = typer.Option(None, "--only", help="Run stages matching GLOB and what they need."),
        jobs: int = typer.Option(1, "--jobs", min=1, help="Independent stages in parallel "
                                 "processes; each uses \\[runner] threads, so results do not "
                                 "depend on it."),
        device: Device = typer.Option(Device.auto, "--device", help="auto picks CUDA when present."),
        workdir: Optional[Path] = WORKDIR,
        data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Another copy of MNIST's IDX files."),
        variant: Optional[str] = NAME,
        executor: Executor = typer.Option(Executor.local, "--executor", help="local: --jobs "
                                          "processes here; ray: Ray tasks (pip install -e "
                                          "\".\\[ray]\"), one per stage, on this machine or the "
                                          "cluster at --address."),
        address: Optional[str] = typer.Option(None, "--address", help="With --executor ray: "
                                              "the cluster (auto: the one `ray start` began on "
                                              "this machine; or HOST:PORT); none: Ray on this "
                                              "machine alone.")):
    """Run an experiment: every stage whose output is not cached, then publish the report (into
    the workspace, or with --set into its variants/ folder). When stdout is not a terminal, one
    plain line per stage; every run appends those lines to <workdir>/run.log."""
    from synthgap.data.mnist import DataError, check_mnist

    start = time.time()
    try:
        name, cfg, stages, ws = setup(exp, set_, workdir)
        dest = report_dir(ws, set_, variant)
        if data_dir is not None:
            check_mnist(data_dir)
        if cfg.runner.threads < 1:
            raise UserError(f"runner.threads must be at least 1, got {cfg.runner.threads}")
        rows = plan(stages, ws, cfg, device.value, only, force)
        precision, why = resolve_precision(cfg.runner.cpu_precision, device.value)
    except (UserError, DataError, ValueError) as exc:
        fail(exc)
    todo = [r for r in rows if r["run"]]
    if dry_run:
        print_plan(name, rows)
        return
    how = Execution(executor.value, jobs, address, cfg.runner)
    check_execution(how, device.value, bool(todo))
    ws.root.mkdir(parents=True, exist_ok=True)
    removed = ws.clean_leftovers()
    if removed:
        console.print(f"cleaned {len(removed)} leftover(s) of an interrupted run")
    ctx = dag.Context(device=run_device(device.value), data_dir=str(data_dir) if data_dir else None,
                      threads=cfg.runner.threads, deterministic=cfg.runner.cuda_deterministic,
                      precision=precision)
    log = RunLog(ws.root / "run.log", plain=not console.is_terminal)
    log(f"run {name}: {len(todo)} of {len(rows)} stages to run, {how.describe()}, --device "
        f"{device.value}" + (f", --set {' '.join(set_)}" if set_ else ""))
    log(f"network stages compute in {why}")
    try:
        run_stages(stages, ws, ctx, rows, how, console=console, log=log, publish_to=dest)
    except dag.StageError as exc:
        log(f"stopped: {exc}")
        fail(exc)
    except KeyboardInterrupt:
        log("interrupted")
        fail(UserError("interrupted; finished stages are kept, run the same command to resume"))
    reported = any(stages[r["name"]].publish for r in rows)  # not so under --only 'classify/*'
    done = (f"{name}: {len(todo)} stage(s) run, {len(rows) - len(todo)} cached, "
            f"{time.time() - start:.1f} s; workspace {ws.root}" +
            (f"; report in {dest}" if reported and dest != ws.root else ""))
    log(done, screen=False)
    console.print(done, soft_wrap=True)
    if reported:
        print_results(dest)


def print_plan(name: str, rows: list[dict]) -> None:
    """--dry-run's table: every stage, whether it would run, and why."""
    table = Table(title=f"{name}: {sum(r['run'] for r in rows)} of {len(rows)} stages would run")
    for col in ("stage", "action", "reason"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], "run" if r["run"] else "skip", r["reason"])
    console.print(table)


def check_execution(how: Execution, device: str, work: bool) -> None:
    """One line and exit status 2 where the run cannot execute as asked: --address without Ray,
    and, when there is `work` to do, Ray missing or --device cuda without a GPU."""
    from synthgap.devices import NO_CUDA, on_cuda
    from synthgap.runner.cluster import import_ray

    try:
        if how.address is not None and how.kind != "ray":
            raise UserError("--address is for --executor ray")
        if work and how.kind == "ray":
            import_ray()
        if work and device == "cuda" and not on_cuda(device):
            raise UserError(NO_CUDA)
    except UserError as exc:
        fail(exc)


DEVICE_OF_RUN = typer.Option(Device.auto, "--device", help="The device of the run to look at "
                             "(part of every key).")


@app.command()
def status(exp: str, set_: Optional[List[str]] = SETS, workdir: Optional[Path] = WORKDIR,
           device: Device = DEVICE_OF_RUN):
    """Which stages are done (with seconds and metrics) and which would run, and why; a done
    stage made under another torch version or on another kind of machine says so."""
    import torch

    from synthgap.devices import device_name

    try:
        name, cfg, stages, ws = setup(exp, set_, workdir)
        rows = plan(stages, ws, cfg, device.value)
    except (UserError, ValueError) as exc:
        fail(exc)
    here = {"torch": torch.__version__, "device_name": device_name(device.value)}
    table = Table(title=f"{name} in {ws.root}")
    for col in ("stage", "state", "seconds", "metrics / reason"):
        table.add_column(col)
    for r in rows:
        if r["run"]:
            table.add_row(r["name"], "[yellow]pending", "", r["reason"])
        else:
            meta = ws.meta(stages[r["name"]].kind, r["key"])
            shown = {k: (round(v, 4) if isinstance(v, float) else v)
                     for k, v in meta["metrics"].items() if isinstance(v, (int, float, str))}
            ran = meta.get("ran", {})
            moved = [f"{k} {ran[k]} (now {v})" for k, v in here.items() if ran.get(k, v) != v]
            state = "[green]done" + (f" [yellow](made with {', '.join(moved)})" if moved else "")
            table.add_row(r["name"], state, f"{meta['seconds']:.1f}", str(shown))
    console.print(table)
    done = sum(not r["run"] for r in rows)
    console.print(f"{done} of {len(rows)} stages done")


@app.command()
def verify(exp: str = typer.Argument(..., help="Experiment name in configs/ (or a .toml path)."),
           workdir: Optional[Path] = WORKDIR):
    """Re-hash every finished stage in the workspace's cache and name each whose files no longer
    match what it wrote (a truncated or edited file). Exit status 1 if any; the next run rebuilds
    those stages and their dependants."""
    try:
        name = config.config_path(exp).stem
    except UserError as exc:
        fail(exc)
    ws = Workspace(workdir or Path("runs") / name)
    checked = damaged = 0
    for path in sorted(ws.cache.glob("*/*/meta.json")):
        kind, key = path.parent.parent.name, path.parent.name
        bad = ws.damaged(kind, key, full=True)
        checked += 1
        if bad:
            damaged += 1
            print(f"damaged: {ws.meta(kind, key)['name']} ({kind}/{key}): {', '.join(bad)}")
    print(f"{checked} cached stage(s) checked in {ws.root}, {damaged} damaged")
    if damaged:
        raise typer.Exit(1)


@app.command("dag")
def show_dag(exp: str, format: Format = typer.Option(Format.text, "--format"),
             set_: Optional[List[str]] = SETS):
    """Print the stage graph as text, Mermaid or Graphviz dot."""
    try:
        _, _, stages, _ = setup(exp, set_, None)
    except UserError as exc:
        fail(exc)
    print(dag.draw(stages, format.value))


@app.command("list")
def list_experiments():
    """The experiments in configs/ with their descriptions."""
    for name, path in config.experiments().items():
        try:
            desc = config.load(str(path))[1].experiment.description
        except UserError as exc:
            desc = f"(broken: {exc})"
        print(f"{name:<16} {desc}")


@app.command("show-config")
def show_config(exp: str = typer.Argument(..., help="Experiment name in configs/ (or a .toml path)."),
                set_: Optional[List[str]] = SETS):
    """Print the resolved config: its base's values, the file's own and the --set overrides over
    the defaults (the dataclasses named in synthgap/study/config.py), every key."""
    try:
        print(config.show(config.load(exp, set_)[1]), end="")
    except UserError as exc:
        fail(exc)


@app.command()
def bench(device: Device = typer.Option(Device.auto, "--device", help="auto picks CUDA when present."),
          json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the figures "
                                                   "here as JSON."),
          markdown_path: Optional[Path] = typer.Option(None, "--markdown", help="Also write "
                                                       "the table here as Markdown."),
          repeats: int = typer.Option(3, "--repeats", min=3, help="Timed runs per figure."),
          threads: int = typer.Option(1, "--threads", min=1, help="Torch threads: one, as each "
                                      "worker of a run with --jobs N on N cores has."),
          precision: str = typer.Option("auto", "--precision", help="The fast path timed beside "
                                        "float32: auto (bf16 where the CPU has bf16 "
                                        "instructions, else float32 channels-last) or bf16. On "
                                        "CUDA: bf16 autocast.")):
    """Measure, in one run on one device: font rendering (digits/s, one worker and all cores),
    classifier training (steps/s and images/s, one cell and a group of cells at once), refiner
    training and one gap detector (steps/s and images/s). Each network is timed in float32 and on
    the fast path, with their ratio; the refiner and the detector also in a reference loop in the
    common style of public CycleGAN code (PNG files, a Dataset, a DataLoader with workers). Each
    figure is the median of --repeats runs after a warm-up, with its range; sizes are set per
    device type (synthgap/study/bench.py)."""
    import json

    from synthgap.devices import resolve_device
    from synthgap.study.bench import markdown, run_bench

    try:
        dev = resolve_device(device.value)
        if precision == "float32":
            raise UserError("--precision float32: float32 is always timed; give auto or bf16 for "
                            "the fast path beside it")
        fast, why = resolve_precision(precision, device.value, setting="--precision")
    except UserError as exc:
        fail(exc)
    for flag, path in (("--json", json_path), ("--markdown", markdown_path)):
        if path is not None and not path.parent.is_dir():
            fail(UserError(f"{flag} {path}: folder {path.parent} does not exist"))
    console.print(f"bench on {dev.type}, {threads} thread(s), fast path: {why}; each figure: "
                  f"median of {repeats} runs (lowest-highest)", highlight=False)
    result = run_bench(dev, repeats, log=lambda line: console.print(line, highlight=False),
                       fast=fast, threads=threads)
    result["fast_why"] = why
    table = Table(title=f"pipeline bench: {result['device']}, torch {result['torch']}, "
                        f"{result['threads']} threads")
    for col in ("part", "loop", "median", "range", "unit"):
        table.add_column(col, justify="right" if col in ("median", "range") else "left")
    for r in result["rows"]:
        spread = f"{r['low']:.1f} – {r['high']:.1f}" if r["low"] is not None else ""
        table.add_row(r["part"], r["loop"], f"{r['median']:.2f}", spread, r["unit"])
    console.print(table)
    for path, text in ((json_path, json.dumps(result, indent=2) + "\n"),
                       (markdown_path, markdown(result))):
        if path is not None:
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(text)
            tmp.replace(path)
            console.print(f"written: {path}", highlight=False)


@app.command("report")
def report_cmd(exp: str = typer.Argument(..., help="Experiment name in configs/ (or a .toml path)."),
               workdir: Optional[Path] = WORKDIR, set_: Optional[List[str]] = SETS,
               variant: Optional[str] = NAME, device: Device = DEVICE_OF_RUN,
               readme: Optional[Path] = typer.Option(None, "--readme", help="Also publish the "
                                                     "report into this README: its results block "
                                                     "(error table or regimes' answer) and "
                                                     "docs/results/<experiment>.md, with figures.")):
    """Report what is cached, computing nothing: the summary and gap tables of a finished run
    (its report is assembled from the cache if need be), or, while stages are missing, which ones
    (exit status 1; `pipeline run` computes them)."""
    from synthgap.study.publish import publish_results

    try:
        name, cfg, stages, ws = setup(exp, set_, workdir)
        dest = report_dir(ws, set_, variant)
        rows = plan(stages, ws, cfg, device.value)
        if readme is not None and not readme.is_file():
            raise UserError(f"--readme {readme}: no such file; give the project's README.md")
    except (UserError, ValueError) as exc:
        fail(exc)
    missing = [r["name"] for r in rows if r["run"] and r["name"] != "report"]
    if missing:
        shown = ", ".join(missing[:8]) + (f", ... ({len(missing)} in all)" if len(missing) > 8 else "")
        console.print(f"{name}: {len(missing)} of {len(rows) - 1} stages the report needs are not "
                      f"in {ws.root / 'cache'}: {shown}. `pipeline run {exp}` computes them.",
                      soft_wrap=True, highlight=False)
        raise typer.Exit(1)
    ctx = dag.Context(device="cpu")  # the report stage reads cached results and writes tables
    try:
        run_stages(stages, ws, ctx, rows, console=console, publish_to=dest,
                   log=RunLog(None, plain=not console.is_terminal))
    except dag.StageError as exc:
        fail(exc)
    console.print(f"report of {name} in {dest}", soft_wrap=True)
    print_results(dest)
    if readme is not None:
        try:
            for path in publish_results(dest, readme, name):
                console.print(f"written: {path}", highlight=False)
        except UserError as exc:
            fail(exc)


if __name__ == "__main__":
    sys.exit(app())
