"""Running a planned graph: its units of work (a stage, or a group of stages computed in one call)
go to an executor as their inputs are done, with rich progress bars on a terminal and plain lines
elsewhere, every line also in the workspace's `run.log`. The executor is chosen in one place,
`Execution.executor`: units one by one here, in `--jobs` processes, or as Ray tasks."""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from synthgap.devices import Precision, run_device
from synthgap.runner.build import Unit
from synthgap.runner.dag import Context, Stage, StageError
from synthgap.runner.local import Pool, Serial
from synthgap.runner.workspace import Workspace, publish


@dataclass
class RunnerConfig:
    """[runner]: how the stages are run. `threads` is part of every stage's key (as is the device
    type), the rest never is."""
    threads: int = 1                # torch threads of every stage, whatever --jobs or the cores: a
                                    # key gives one result. --jobs N on N cores uses them all
    cuda_deterministic: bool = True  # on CUDA: deterministic algorithms where the ops have them,
                                    # a fixed cuBLAS workspace and no cuDNN autotuning
    ray_cpus: dict[str, float] = field(default_factory=dict)  # CPUs a Ray task asks for, by
                                    # stage kind (e.g. {KIND = 2}); any other kind: 1
    ray_gpus: float = 1.0           # GPUs a stage that declares `network` asks for on a Ray cluster
                                    # with GPUs
    ray_retries: int = 2            # times Ray reruns a stage whose worker process died
    cpu_precision: str = "auto"     # network stages on the CPU: "float32"; "bf16" (bf16 autocast,
                                    # channels-last); "auto": bf16 where the CPU has bf16
                                    # instructions, else float32 channels-last. CUDA: bf16 autocast


def run_env(threads: int, device: str = "auto", precision: Precision | None = None) -> dict:
    """What enters every stage's key besides the stage itself: the torch threads and the device
    type, so a result never depends on --jobs or the cores, and a CPU result and a CUDA result
    never share a key; and the precision, which enters only a network stage's key."""
    return {"threads": threads, "device": run_device(device),
            **({"precision": precision.key()} if precision is not None else {})}


@dataclass
class Execution:
    """How a run executes its units: `kind` "local" runs them here, in `jobs` spawned processes
    when more than one; "ray" runs Ray tasks on the cluster at `address` (none: Ray on this
    machine alone), with `runner`'s resources and retries."""
    kind: str = "local"
    jobs: int = 1
    address: str | None = None
    runner: RunnerConfig = field(default_factory=RunnerConfig)

    def executor(self, ws: Workspace, device: str, show):
        """The executor of this run; `show(stage, done, total, description)` gets progress."""
        if self.kind == "ray":
            from synthgap.runner.cluster import RayExecutor
            return RayExecutor(ws, show, self.runner, self.address, device)
        if self.jobs > 1:
            return Pool(str(ws.root), show, self.jobs)
        return Serial(str(ws.root), show)

    def describe(self) -> str:
        return f"--jobs {self.jobs}" if self.kind == "local" else \
            f"--executor ray ({self.address or 'local'})"


class RunLog:
    """One plain line per event, appended to the workspace's `run.log` and, when `plain` (stdout is
    not a terminal: a batch job, `> log`), printed as well; the rich display is for terminals."""

    PROGRESS_EVERY = 30.0  # seconds between progress lines of one stage

    def __init__(self, path: Path | None, plain: bool):
        self.path, self.plain, self.last = path, plain, {}

    def __call__(self, text: str, screen: bool = True) -> None:
        """Log a line; `screen` False keeps it off the screen (the caller prints it itself)."""
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}"
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as fh:
                fh.write(line + "\n")
        if self.plain and screen:
            print(line, flush=True)

    def progress(self, name: str, done, total, description=None) -> None:
        now = time.monotonic()
        if now - self.last.setdefault(name, now) >= self.PROGRESS_EVERY:
            self.last[name] = now
            self(f"  ...  {name} {done}/{total}" + (f" ({description})" if description else ""))


def headline(meta: dict) -> str:
    """The one number a finished stage's line shows: the first number among its metrics."""
    for k, v in meta.get("metrics", {}).items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return f"{k} {v:.4g}"
    return ""


class Board:
    """What a run shows: on a terminal a bar per running stage and one for the run, in the log a
    line per stage started, finished or failed (and a progress line now and then)."""

    def __init__(self, progress, log: RunLog, rows: dict[str, dict]):
        self.bars, self.log, self.rows, self.tasks = progress, log, rows, {}
        self.overall = progress.add_task("stages", total=sum(r["run"] for r in rows.values()))

    def show(self, name: str, done, total, description=None) -> None:
        if name not in self.tasks:
            self.tasks[name] = self.bars.add_task(f"  {name}", total=total or 1)
            self.log(f"start  {name}  ({self.rows[name]['reason']})")
        label = f"  {name}" + (f" ({description})" if description else "")
        self.bars.update(self.tasks[name], completed=done, total=total or 1, description=label)
        self.log.progress(name, done, total, description)

    def started(self, unit: Unit) -> None:
        for name in unit.names:
            if self.rows[name]["run"]:
                self.show(name, 0, 1)

    def finished(self, name: str, meta: dict) -> None:
        if name in self.tasks:
            self.bars.remove_task(self.tasks.pop(name))
        self.bars.advance(self.overall)
        self.log(f"done   {name}  {meta['seconds']:.1f} s  {headline(meta)}".rstrip())

    def failed(self, label: str, exc: Exception) -> StageError:
        """One line on the screen; the whole traceback (a worker's too) in run.log only."""
        self.log(f"FAILED {label}: {exc}")
        self.log("".join(traceback.format_exception(exc)).rstrip(), screen=False)
        return StageError(f"stage {label} failed: {exc}")


def units_of(stages: dict[str, Stage], rows: list[dict]) -> list[tuple[str, ...]]:
    """The units of the rows that must run: each stage alone, or its whole group, once."""
    units, seen = [], set()
    for r in rows:
        if r["run"] and r["name"] not in seen:
            units.append(tuple(stages[r["name"]].group) or (r["name"],))
            seen.update(units[-1])
    return units


def schedule(units, ready, executor, make, board: Board, complete) -> None:
    """Submit each unit (its stage names) once `ready(unit)`, as the executor has room, built by
    `make(unit)`; `complete(unit, metas)` for each that ends. The first failure stops new work and
    is raised once the running units have ended."""
    waiting, running, failure, cause = list(units), 0, None, None
    while waiting or running:
        if failure is None:
            for names in [u for u in waiting if ready(u)]:
                if running >= executor.slots:
                    break
                waiting.remove(names)
                running += 1
                unit = make(names)
                board.started(unit)
                executor.submit(unit)
            if not running:
                raise RuntimeError(f"stages wait for inputs nothing makes: {waiting[0]}")
        elif not running:
            break
        for unit, result in executor.wait(0.2):
            running -= 1
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result  # an interrupt or an exit in a worker ends the run as it is
            try:
                if isinstance(result, Exception):
                    raise result
                complete(unit, result)
            except Exception as exc:  # the first failure stops new work
                failure, cause = failure or board.failed(unit.label(), exc), cause or exc
    if failure:
        raise failure from cause


def run(stages: dict[str, Stage], ws: Workspace, ctx: Context, rows: list[dict],
        how: Execution | None = None, console=None, log: RunLog | None = None,
        publish_to: Path | None = None) -> list[dict]:
    """Execute the rows of `plan` that must run, as `how` says (by default one by one here);
    publishing stages copy their files to `publish_to` (the workspace root unless given). Return
    the metas of the stages run."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    how, log = how or Execution(), log or RunLog(None, False)
    by_name = {r["name"]: r for r in rows}
    finished = {r["name"] for r in rows if not r["run"]}
    metas: list[dict] = []

    def publish_if_asked(name):
        if stages[name].publish:
            publish(ws.out(stages[name].kind, by_name[name]["key"]), ws, publish_to)

    def make(names) -> Unit:
        return Unit([stages[n] for n in names], [by_name[n] for n in names],
                    [{k: ws.out(stages[d].kind, by_name[d]["key"]) for k, d in stages[n].deps.items()}
                     for n in names], ctx)

    def complete(unit: Unit, unit_metas: list[dict]) -> None:
        for name, meta in zip(unit.names, unit_metas):
            if by_name[name]["run"]:
                metas.append(meta)
                finished.add(name)
                publish_if_asked(name)
                board.finished(name, meta)

    for name in finished:
        publish_if_asked(name)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False, disable=log.plain) as progress:
        board = Board(progress, log, by_name)
        executor = how.executor(ws, ctx.device, board.show)
        try:
            schedule(units_of(stages, rows), lambda names: all(
                d in finished for n in names for d in stages[n].deps.values()),
                executor, make, board, complete)
        finally:
            executor.close()
    return metas
