"""synthgap's command line: run an experiment's stage graph, inspect it, and report.

    pipeline run mnist-sweep            run (or resume) the study; cached stages are skipped
    pipeline run smoke --dry-run        say which stages would run, and why
    pipeline status smoke               what is done, what is stale
    pipeline dag smoke --format mermaid the stage graph
"""

from __future__ import annotations

import sys
import time
import tomllib
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

import dag
from graph import UserError, build_graph
from workspace import Workspace

ROOT = Path(__file__).resolve().parent
CONFIG_DIRS = (Path("configs"), ROOT / "configs")

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
def config_path(exp: str) -> Path:
    if exp.endswith(".toml"):
        if not Path(exp).is_file():
            raise UserError(f"config file {exp} does not exist")
        return Path(exp)
    for folder in CONFIG_DIRS:
        if (folder / f"{exp}.toml").is_file():
            return folder / f"{exp}.toml"
    raise UserError(f"unknown experiment {exp!r}; known: {', '.join(experiments()) or 'none'} "
                    "(or pass a path to a .toml file)")


def experiments() -> dict[str, Path]:
    found = {}
    for folder in reversed(CONFIG_DIRS):
        for path in sorted(folder.glob("*.toml")):
            found[path.stem] = path
    return found


def flatten(cfg: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in cfg.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def same_type(old, new) -> bool:
    if isinstance(old, bool) or isinstance(new, bool):
        return isinstance(old, bool) and isinstance(new, bool)
    if isinstance(old, float):
        return isinstance(new, (int, float))
    if isinstance(old, list):
        return isinstance(new, list) and all(same_type(old[0], n) for n in new) if old else True
    return type(old) is type(new)


def apply_overrides(cfg: dict, sets: list[str]) -> dict:
    """Apply `key=value` overrides (TOML values) after checking each key and type."""
    valid = flatten(cfg)
    for item in sets or []:
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq:
            example = next((k for k in valid if k.endswith("steps")), next(iter(valid)))
            raise UserError(f"--set {item!r} is not key=value (e.g. --set {example}=500)")
        if key not in valid:
            raise UserError(f"--set: unknown key {key!r}; valid keys: {', '.join(sorted(valid))}")
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        if isinstance(valid[key], str) and not isinstance(value, str):
            value = text
        if not same_type(valid[key], value):
            raise UserError(f"--set {key}: {text!r} is not a {type(valid[key]).__name__} like "
                            f"{valid[key]!r}; valid keys: {', '.join(sorted(valid))}")
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = float(value) if isinstance(valid[key], float) else value
        valid[key] = node[leaf]
    return cfg


def load_config(exp: str, sets: list[str] | None = None) -> tuple[str, dict]:
    path = config_path(exp)
    try:
        cfg = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML ({exc})") from None
    return path.stem, apply_overrides(cfg, sets)


def setup(exp: str, sets, workdir: Optional[Path]):
    name, cfg = load_config(exp, sets)
    try:
        stages = build_graph(name, cfg)
    except KeyError as exc:
        raise UserError(f"{config_path(exp)} lacks the key {exc.args[0]!r}; compare it with "
                        "configs/mnist-sweep.toml") from None
    return name, cfg, stages, Workspace(workdir or Path("runs") / name)


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
    err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
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
    for name, path in experiments().items():
        try:
            desc = tomllib.loads(path.read_text()).get("experiment", {}).get("description", "")
        except tomllib.TOMLDecodeError:
            desc = "(not valid TOML)"
        print(f"{name:<16} {desc}")


@app.command("report")
def report_cmd(exp: str, workdir: Optional[Path] = WORKDIR, set_: Optional[List[str]] = SETS):
    """Build (or reuse) the report of an experiment and print its summary table."""
    run(exp, set_=set_, dry_run=False, force=None, only=["report"], jobs=1, device=Device.auto,
        workdir=workdir, data_dir=None)


if __name__ == "__main__":
    sys.exit(app())
