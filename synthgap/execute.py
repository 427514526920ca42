"""The generic stage runner's execution: each stage's output built under its lock into a
temporary folder, its `meta.json` written last and the folder renamed into place; units of work run
one by one, in `--jobs` spawned processes or on a Ray cluster (synthgap/cluster.py); progress and
`run.log`. The stages and their keys are synthgap/dag.py's."""

from __future__ import annotations

import functools
import os
import platform
import shutil
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import asdict, replace
from pathlib import Path

from synthgap.dag import Context, Stage, StageError
from synthgap.workspace import META, Workspace, publish, record_outputs, write_json


def versions() -> dict:
    out = {"python": platform.python_version()}
    out.update({m: sys.modules[m].__version__ for m in ("torch", "numpy") if m in sys.modules})
    return out


def execute_group(stages: list[Stage], rows: list[dict], inputs: list[dict], ws_root: str,
                  ctx: Context) -> list[dict]:
    """Build the outputs of stages computed in one call (a single stage, or a group sharing a
    `group_fn`), each under its own lock, each folder renamed into place on its own. Every member
    is computed; one already done (and not to be rebuilt) keeps its output. Return their metas."""
    ws = Workspace(Path(ws_root))
    members = list(zip(stages, rows))
    with ExitStack() as locks:
        keep = lock_members(ws, members, locks, ctx)
        if all(keep):
            return [ws.meta(s.kind, r["key"]) for s, r in members]
        tmps = begin_outputs(ws, members)
        start = time.time()
        results, ran = compute(stages, inputs, tmps, ctx)
        return finish_outputs(ws, members, tmps, results, keep, time.time() - start, ctx.device,
                              {"ran": ran})


def lock_members(ws: Workspace, members, locks: ExitStack, ctx: Context) -> list[bool]:
    """Take every member's lock (in one order: no deadlock); which of them to keep as they are."""
    for s, r in sorted(members, key=lambda m: m[0].name):
        locks.enter_context(ws.stage_lock(s.kind, r["key"], on_wait=lambda: ctx.report(
            0, 1, "waiting for another run")))
    return [ws.is_done(s.kind, r["key"]) and not r["rebuild"] for s, r in members]


def begin_outputs(ws: Workspace, members) -> list[Path]:
    """A fresh `.tmp-<key>` folder per member, leftovers of a killed run removed."""
    tmps = []
    for s, r in members:
        out = ws.out(s.kind, r["key"])
        tmp, old = out.with_name(f".tmp-{r['key']}"), out.with_name(f".old-{r['key']}")
        for leftover in (tmp, old):
            if leftover.exists():
                shutil.rmtree(leftover)
        tmp.mkdir(parents=True)
        tmps.append(tmp)
    return tmps


def compute(stages: list[Stage], inputs: list[dict], outs: list[Path],
            ctx: Context) -> tuple[list[dict], dict]:
    """Run the stage's function (or the group's) with its outputs going into `outs`, under the
    context's torch threads and, on CUDA, deterministic algorithms as asked. Returns the metrics
    of each stage and how it ran (threads, torch, device name, determinism)."""
    import torch

    if ctx.threads:
        torch.set_num_threads(ctx.threads)
    cuda = on_cuda(ctx.device)
    if cuda:  # read when cuBLAS starts: set before any stage of this process uses it
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(ctx.deterministic, warn_only=True)
    given = [{k: str(v) for k, v in i.items()} for i in inputs]
    if len(stages) == 1:
        results = [stages[0].fn(stages[0].params, given[0], outs[0], ctx) or {}]
    else:
        results = stages[0].group_fn([s.params for s in stages], given, outs, ctx)
    ran = {"threads": torch.get_num_threads(), "torch": torch.__version__,
           "device_name": machine_name(ctx.device)}
    if cuda:
        ran["deterministic"] = torch.are_deterministic_algorithms_enabled()
    return results, ran


def on_cuda(device: str) -> bool:
    """Whether stages given `device` ("auto", "cpu" or "cuda") run on a GPU."""
    import torch

    return device != "cpu" and torch.cuda.is_available()


def machine_name(device: str) -> str:
    """The GPU's name where `device` runs on CUDA, else the CPU's."""
    import torch

    if on_cuda(device):
        return torch.cuda.get_device_name()
    return f"{platform.processor() or platform.machine()} CPU"


def finish_outputs(ws: Workspace, members, tmps: list[Path], results: list[dict],
                   keep: list[bool], seconds: float, device: str,
                   extra: dict | None = None) -> list[dict]:
    """Check each member's declared files, write its meta (with `extra`; `device` unless the
    stage said which) and rename its folder into place; a kept member's new folder is dropped.
    Return the metas."""
    metas = []
    for (s, r), tmp, metrics, kept in zip(members, tmps, results, keep):
        if kept:
            shutil.rmtree(tmp)
            metas.append(ws.meta(s.kind, r["key"]))
            continue
        missing = [f for f in s.outs if not (tmp / f).is_file()]
        if missing:
            raise RuntimeError(f"{s.name} did not write its declared output(s) "
                               f"{', '.join(missing)}")
        meta = {"name": s.name, "kind": s.kind, "key": r["key"], "params": s.params,
                "code": r["code"], "upstream": r["upstream"], "env": r.get("env", {}),
                "deps": s.deps,
                "device": metrics.pop("device", device), "metrics": metrics,
                "seconds": round(seconds, 3), "versions": versions(), "finished": time.time(),
                "outputs": record_outputs(tmp), **(extra or {})}
        if len(members) > 1:
            meta["group"] = [m[0].name for m in members]  # `seconds` is the whole group's
        write_json(tmp / META, meta)
        out, old = ws.out(s.kind, r["key"]), tmp.with_name(f".old-{r['key']}")
        if out.exists():
            out.rename(old)
        tmp.rename(out)
        if old.exists():
            shutil.rmtree(old)
        metas.append(meta)
    return metas


class QueueProgress:
    """A picklable progress callback for stages running in worker processes."""

    def __init__(self, queue, name: str):
        self.queue, self.name = queue, name

    def __call__(self, done, total, description=None):
        self.queue.put((self.name, done, total, description))


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


def key_metric(meta: dict) -> str:
    """The one number a finished stage's line shows."""
    m = meta.get("metrics", {})
    for k in ("test_error", "label_retention", "frechet", "steps_per_second"):
        if isinstance(m.get(k), (int, float)):
            return f"{k} {m[k]:.4g}"
    return ""


def run(stages: dict[str, Stage], ws: Workspace, ctx: Context, rows: list[dict], jobs: int = 1,
        console=None, log: RunLog | None = None, publish_to: Path | None = None,
        executor: str = "local", address: str | None = None,
        runner: dict | None = None) -> list[dict]:
    """Execute the rows of `plan` that must run, with rich progress bars on a terminal and plain
    lines (`log`) elsewhere; publishing stages copy their files to `publish_to` (the workspace
    root unless given). `executor` "local" runs `jobs` processes here; "ray" runs Ray tasks on
    the cluster at `address` (synthgap/cluster.py; `runner`: the [runner] config). Return the
    metas of the stages run."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    log = log or RunLog(None, False)
    by_name = {r["name"]: r for r in rows}
    todo = [r for r in rows if r["run"]]
    finished = {r["name"] for r in rows if not r["run"]}
    metas: list[dict] = []

    def inputs(name):
        return {k: ws.out(stages[d].kind, by_name[d]["key"]) for k, d in stages[name].deps.items()}

    def publish_if_asked(name):
        if stages[name].publish:
            publish(ws.out(stages[name].kind, by_name[name]["key"]), ws, publish_to)

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False, disable=log.plain) as progress:
        overall = progress.add_task("stages", total=len(todo))
        tasks = {}

        def show(name, done, total, description=None):
            if name not in tasks:
                tasks[name] = progress.add_task(f"  {name}", total=total or 1)
                log(f"start  {name}  ({by_name[name]['reason']})")
            label = f"  {name}" + (f" ({description})" if description else "")
            progress.update(tasks[name], completed=done, total=total or 1, description=label)
            log.progress(name, done, total, description)

        def complete(name, meta):
            metas.append(meta)
            finished.add(name)
            publish_if_asked(name)
            if name in tasks:
                progress.remove_task(tasks.pop(name))
            progress.advance(overall)
            log(f"done   {name}  {meta['seconds']:.1f} s  {key_metric(meta)}".rstrip())

        def failed(name, exc):
            log(f"FAILED {name}: {exc}")
            return StageError(f"stage {name} failed: {exc}")

        def begin(unit, progress_to):
            """Show a unit's stages as started; the arguments of `execute_group` for it."""
            for n in unit:
                if by_name[n]["run"]:
                    show(n, 0, 1)
            local = replace(ctx, progress=progress_to(first(unit)))
            return ([stages[n] for n in unit], [by_name[n] for n in unit],
                    [inputs(n) for n in unit], str(ws.root), local)

        def end(unit, unit_metas):
            for n, meta in zip(unit, unit_metas):
                if by_name[n]["run"]:
                    complete(n, meta)

        def first(unit):  # the unit's progress shows on its first stage to run
            return next(n for n in unit if by_name[n]["run"])

        def unit_name(unit):
            return first(unit) if len(unit) == 1 else f"{first(unit)} (group of {len(unit)})"

        for name in finished:
            publish_if_asked(name)
        units, seen = [], set()  # the stages computed in one call: a stage, or its group
        for r in todo:
            if r["name"] not in seen:
                units.append(tuple(stages[r["name"]].group) or (r["name"],))
                seen.update(units[-1])
        if executor == "ray":
            from synthgap.cluster import run_ray
            from synthgap.config import RunnerConfig
            run_ray(stages, units, finished, begin, end, show, unit_name, failed, ws,
                    runner or asdict(RunnerConfig()), address, ctx.device)
            return metas
        if jobs > 1:
            _run_parallel(stages, units, finished, begin, end, show, unit_name, failed, jobs)
            return metas
        for unit in units:
            args = begin(unit, lambda name: functools.partial(show, name))
            try:
                unit_metas = execute_group(*args)
            except Exception as exc:
                raise failed(unit_name(unit), exc) from exc
            end(unit, unit_metas)
    return metas


def _exit_with_parent(parent: int) -> None:
    """Worker initialiser: end the worker once the runner that spawned it is gone (killed by a
    signal it cannot catch), so no orphan keeps computing; its unfinished stage folder is cleaned
    on the next run like any other leftover."""
    import threading

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _run_parallel(stages, units, finished, begin, end, show, unit_name, failed, jobs):
    """Run `units` in `jobs` spawned processes as their dependencies finish."""
    import multiprocessing as mp
    import queue as queue_mod

    mpctx = mp.get_context("spawn")
    manager = mpctx.Manager()
    events = manager.Queue()
    processes = max(1, (os.cpu_count() or 1) // jobs)  # a stage's own workers: output alike
    waiting, running, failure = list(units), {}, None
    with ProcessPoolExecutor(max_workers=jobs, mp_context=mpctx, initializer=_exit_with_parent,
                             initargs=(os.getpid(),)) as pool:
        while waiting or running:
            if failure is None:
                for unit in list(waiting):
                    if len(running) >= jobs:
                        break
                    if all(d in finished for n in unit for d in stages[n].deps.values()):
                        waiting.remove(unit)
                        *args, local = begin(unit, lambda name: QueueProgress(events, name))
                        local.processes = processes
                        running[pool.submit(execute_group, *args, local)] = unit
            elif not running:
                break
            done, _ = wait(running, timeout=0.2, return_when=FIRST_COMPLETED)
            try:
                while True:
                    show(*events.get_nowait())
            except queue_mod.Empty:
                pass
            for fut in done:
                unit = running.pop(fut)
                try:
                    end(unit, fut.result())
                except Exception as exc:  # the first failure stops new work
                    failure = failure or failed(unit_name(unit), exc)
    manager.shutdown()
    if failure:
        raise failure
