"""The runner's executors on this machine: units one by one in this process (`Serial`), or in
`jobs` spawned worker processes (`Pool`). Both build a unit's outputs with build.py; run.py
schedules the units and chooses the executor.

Every executor offers the same three calls: `submit(unit)` starts a unit whose inputs are done,
`wait(timeout)` gives the units that ended since, each with its metas or the exception it raised,
and `close()` ends what it started. `slots` says how many units it runs at once."""

from __future__ import annotations

import functools
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import replace

from synthgap.runner.build import Unit, build


class QueueProgress:
    """A picklable progress callback for stages running in worker processes: it puts
    (stage, done, total, description) on a queue that the executor empties into `show`."""

    def __init__(self, queue, name: str):
        self.queue, self.name = queue, name

    def __call__(self, done, total, description=None):
        self.queue.put((self.name, done, total, description))


def drain(queue, show, empty) -> None:
    """Pass every progress event waiting on `queue` to `show` (`empty`: the queue's Empty)."""
    while True:
        try:
            show(*queue.get_nowait())
        except empty:
            return


class Serial:
    """Units one by one in this process: `submit` builds the unit before it returns."""
    slots = 1

    def __init__(self, ws_root: str, show):
        self.ws_root, self.show, self.ended = ws_root, show, []

    def submit(self, unit: Unit) -> None:
        unit.ctx = replace(unit.ctx, progress=functools.partial(self.show, unit.first()))
        try:
            self.ended.append((unit, build(unit, self.ws_root)))
        except Exception as exc:  # the scheduler names the stage and stops
            self.ended.append((unit, exc))

    def wait(self, timeout: float) -> list:
        ended, self.ended = self.ended, []
        return ended

    def close(self) -> None:
        pass


def exit_with_parent(parent: int) -> None:
    """Worker initialiser: end the worker once the runner that spawned it is gone (killed by a
    signal it cannot catch), so no orphan keeps computing; its unfinished stage folder is cleaned
    on the next run like any other leftover."""
    import threading

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


class Pool:
    """Units in `jobs` spawned worker processes. A stage's own CPU-bound work (`ctx.processes`)
    gets the cores shared out among the jobs; its output does not depend on their number."""

    def __init__(self, ws_root: str, show, jobs: int):
        import multiprocessing as mp

        context = mp.get_context("spawn")
        self.manager = context.Manager()
        self.events = self.manager.Queue()
        self.pool = ProcessPoolExecutor(max_workers=jobs, mp_context=context,
                                        initializer=exit_with_parent, initargs=(os.getpid(),))
        self.ws_root, self.show, self.slots = ws_root, show, jobs
        self.processes = max(1, (os.cpu_count() or 1) // jobs)
        self.running = {}

    def submit(self, unit: Unit) -> None:
        unit.ctx = replace(unit.ctx, progress=QueueProgress(self.events, unit.first()),
                           processes=self.processes)
        self.running[self.pool.submit(build, unit, self.ws_root)] = unit

    def wait(self, timeout: float) -> list:
        import queue

        done = wait(self.running, timeout=timeout, return_when=FIRST_COMPLETED)[0] \
            if self.running else set()
        drain(self.events, self.show, queue.Empty)
        return [(self.running.pop(f), f.exception() or f.result()) for f in done]

    def close(self) -> None:
        self.pool.shutdown()
        self.manager.shutdown()
