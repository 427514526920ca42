"""synthgap's command line: run an experiment's stage graph, inspect it, and report.

    pipeline run mnist-sweep            run (or resume) the study; cached stages are skipped
    pipeline run smoke --dry-run        say which stages would run, and why
    pipeline status smoke               what is done, what is stale
    pipeline dag smoke --format mermaid the stage graph
"""

from __future__ import annotations

import sys
import time
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

import dag
from graph import build_graph
from synthgap import config
from synthgap.config import UserError
from workspace import Workspace

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
err_console = Console(stderr=True)




# -------------------------------------------------------------------------------------- configs
def load_config(exp: str, sets: list[str] | None = None) -> tuple[str, dict]:
    return config.load(exp, sets)


def setup(exp: str, sets, workdir: Optional[Path]):
    name, cfg = load_config(exp, sets)
    return name, cfg, build_graph(name, cfg), Workspace(workdir or Path("runs") / name)


def print_summary(ws: Workspace) -> None:
    import report

    path = ws.root / "summary.csv"
    if not path.is_file():
        return
    table = Table(title=f"MNIST test error ({path})")
    for col in ("mixture", "budget", "seeds", "mean error", "95 % CI"):
        table.add_column(col, justify="right" if col != "mixture" else "left")
    for r in report.read_csv(path):
        ci = f"{float(r['ci95_low']):.4f} – {float(r['ci95_high']):.4f}"
        table.add_row(r["mixture"], r["budget"], r["n_seeds"], f"{float(r['mean_error']):.4f}", ci)
    console.print(table)


def print_gap(ws: Workspace) -> None:
    import report

    path = ws.root / "gap.csv"
    if not path.is_file():
        return
    table = Table(title=f"real/synthetic gap, AUC (0.5 = none) ({path})")
    for col in ("source", "budget", "instrument", "AUC", "95 % CI", "accuracy", "Fréchet", "retention"):
        table.add_column(col)
    for r in report.read_csv(path):
        ci = f"{float(r['auc_ci_low']):.3f} – {float(r['auc_ci_high']):.3f}"
        retention = f"{float(r['label_retention']):.3f}" if r["label_retention"] else ""
        table.add_row(r["source"], r["budget"], r["instrument"], f"{float(r['auc']):.3f}", ci,
                      f"{float(r['accuracy']):.3f}", f"{float(r['frechet']):.2f}", retention)
    console.print(table)


def fail(exc: Exception) -> None:
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


# ------------------------------------------------------------------------------------- commands
class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Format(str, Enum):
    text = "text"
    mermaid = "mermaid"
    dot = "dot"


WORKDIR = typer.Option(None, "--workdir", help="Workspace folder (default: runs/<experiment>).")
SETS = typer.Option(None, "--set", help="Override a config value: --set classifier.steps=500.")


@app.command()
def run(exp: str = typer.Argument(..., help="Experiment name in configs/ (or a .toml path)."),
        set_: Optional[List[str]] = SETS,
        dry_run: bool = typer.Option(False, "--dry-run", help="Say what would run and why; run nothing."),
        force: Optional[List[str]] = typer.Option(None, "--force", help="Rerun stages matching GLOB."),
        only: Optional[List[str]] = typer.Option(None, "--only", help="Run stages matching GLOB and what they need."),
        jobs: int = typer.Option(1, "--jobs", min=1, help="Independent stages in parallel processes."),
        device: Device = typer.Option(Device.auto, "--device", help="auto picks CUDA when present."),
        workdir: Optional[Path] = WORKDIR,
        data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Another copy of MNIST's IDX files.")):
    """Run an experiment: every stage whose output is not cached, then publish the report."""
    from data.mnist import DataError, check_mnist

    start = time.time()
    try:
        name, cfg, stages, ws = setup(exp, set_, workdir)
        if data_dir is not None:
            check_mnist(data_dir)
        rows = dag.plan(stages, ws, only, force)
    except (UserError, DataError, ValueError) as exc:
        fail(exc)
    todo = [r for r in rows if r["run"]]
    if dry_run:
        table = Table(title=f"{name}: {len(todo)} of {len(rows)} stages would run")
        for col in ("stage", "action", "reason"):
            table.add_column(col)
        for r in rows:
            table.add_row(r["name"], "run" if r["run"] else "skip", r["reason"])
        console.print(table)
        return
    if todo and device == Device.cuda:
        import torch
        if not torch.cuda.is_available():
            fail(UserError("--device cuda was asked for but torch sees no CUDA device; "
                           "use --device auto or cpu"))
    ws.root.mkdir(parents=True, exist_ok=True)
    removed = ws.clean_leftovers()
    if removed:
        console.print(f"cleaned {len(removed)} leftover(s) of an interrupted run")
    ctx = dag.Context(device=device.value, data_dir=str(data_dir) if data_dir else None)
    try:
        dag.run(stages, ws, ctx, rows, jobs=jobs, console=console)
    except dag.StageError as exc:
        fail(exc)
    except KeyboardInterrupt:
        fail(UserError("interrupted; finished stages are kept, run the same command to resume"))
    console.print(f"{name}: {len(todo)} stage(s) run, {len(rows) - len(todo)} cached, "
                  f"{time.time() - start:.1f} s; workspace {ws.root}")
    print_summary(ws)
    print_gap(ws)


@app.command()
def status(exp: str, set_: Optional[List[str]] = SETS, workdir: Optional[Path] = WORKDIR):
    """Which stages are done (with seconds and metrics) and which would run, and why."""
    try:
        name, cfg, stages, ws = setup(exp, set_, workdir)
        rows = dag.plan(stages, ws)
    except (UserError, ValueError) as exc:
        fail(exc)
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
            table.add_row(r["name"], "[green]done", f"{meta['seconds']:.1f}", str(shown))
    console.print(table)
    done = sum(not r["run"] for r in rows)
    console.print(f"{done} of {len(rows)} stages done")


@app.command("dag")
def show_dag(exp: str, format: Format = typer.Option(Format.text, "--format"),
             set_: Optional[List[str]] = SETS):
    """Print the stage graph as text, Mermaid or Graphviz dot."""
    try:
        _, _, stages, _ = setup(exp, set_, None)
    except UserError as exc:
        fail(exc)
    order = dag.topo_order(stages)
    ids = {n: f"s{i}" for i, n in enumerate(order)}
    if format == Format.text:
        for n in order:
            deps = sorted(set(stages[n].deps.values()))
            shown = ", ".join(deps[:4]) + (f", ... ({len(deps)} in all)" if len(deps) > 4 else "")
            print(f"{n}" + (f"  <- {shown}" if deps else ""))
    elif format == Format.mermaid:
        print("graph LR")
        for n in order:
            print(f'  {ids[n]}["{n}"]')
            for d in sorted(set(stages[n].deps.values())):
                print(f"  {ids[d]} --> {ids[n]}")
    else:
        print("digraph pipeline {\n  rankdir=LR;")
        for n in order:
            print(f'  {ids[n]} [label="{n}"];')
            for d in sorted(set(stages[n].deps.values())):
                print(f"  {ids[d]} -> {ids[n]};")
        print("}")


@app.command("list")
def list_experiments():
    """The experiments in configs/ with their descriptions."""
    for name, path in config.experiments().items():
        try:
            desc = config.load(str(path))[1]["experiment"]["description"]
        except UserError as exc:
            desc = f"(broken: {exc})"
        print(f"{name:<16} {desc}")


@app.command("show-config")
def show_config(exp: str = typer.Argument(..., help="Experiment name in configs/ (or a .toml path)."),
                set_: Optional[List[str]] = SETS):
    """Print the resolved config: its base's values, the file's own and the --set overrides over
    the defaults (the dataclasses named in synthgap/config.py), every key."""
    try:
        print(config.show(load_config(exp, set_)[1]), end="")
    except UserError as exc:
        fail(exc)


@app.command("report")
def report_cmd(exp: str, workdir: Optional[Path] = WORKDIR, set_: Optional[List[str]] = SETS):
    """Build (or reuse) the report of an experiment and print its summary table."""
    run(exp, set_=set_, dry_run=False, force=None, only=["report"], jobs=1, device=Device.auto,
        workdir=workdir, data_dir=None)


if __name__ == "__main__":
    sys.exit(app())
