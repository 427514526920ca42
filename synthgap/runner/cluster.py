"""The runner's Ray executor: the same units as Ray tasks, on one machine or a cluster.

The driver (`pipeline run --executor ray`) alone owns the workspace. For each unit whose inputs are
done it takes the stages' locks, puts each upstream output folder into Ray's object store once (its
files as bytes, meta.json included) and submits a task with the unit's resource request. The task
writes those folders into a temporary directory on its node, runs the stage function exactly as the
local executors do, and returns its metrics, its output files and the node it ran on; the driver
writes them into `.tmp-<key>/`, records `meta.json` (with the node) and renames the folder into
place, as the local executors do. So a cluster run and a local run fill the same cache, and a run
may switch executors and resume.

Inputs travel through the object store, not a shared filesystem: a cluster needs no shared
storage, and every node fetches an upstream output at most once (Ray keeps a copy per node).
A stage that declares `network` asks for `ray_gpus` GPUs where the cluster has any. A worker process
that dies mid-stage is retried by Ray (`[runner] ray_retries`); a stage that raises fails the run
with its name and the remote traceback's last line.
"""

from __future__ import annotations

import math
import socket
import tempfile
import time
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

from synthgap.errors import UserError
from synthgap.runner.build import Unit, begin_outputs, compute, finish_outputs, lock_members
from synthgap.runner.local import QueueProgress, drain
from synthgap.runner.workspace import Workspace


def import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install -e \".[ray]\" (the optional "
                        "extra 'ray')") from None
    return ray


def start(address: str | None):
    """Connect to the cluster at `address` ("auto": the one started on this machine with `ray
    start`), or, without one, start Ray on this machine alone. In a process where Ray is up
    already, that instance is used."""
    ray = import_ray()
    if not ray.is_initialized():
        ray.init(address=address or "local", include_dashboard=False, configure_logging=False,
                 log_to_driver=False)
    return ray


def pack(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def unpack(files: dict[str, bytes], folder: Path) -> None:
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def node() -> dict:
    import ray
    return {"id": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(),
            "ip": ray.util.get_node_ip_address()}


def run_unit(stages, inputs: list[dict], ctx) -> tuple[list[dict], list[dict], dict, float]:
    """The task: a unit's stages on this node. `inputs`: per stage, input name -> object ref of
    the upstream folder's files. Returns (metrics per stage, files per stage, {"node": where,
    "ran": how}, seconds)."""
    import ray

    with tempfile.TemporaryDirectory(prefix="synthgap-") as tmp:
        root, folders = Path(tmp), {}
        local = []
        for member in inputs:
            paths = {}
            for name, ref in member.items():
                if ref.hex() not in folders:  # an upstream shared by members is written once
                    folders[ref.hex()] = root / f"in-{len(folders)}"
                    unpack(ray.get(ref), folders[ref.hex()])
                paths[name] = folders[ref.hex()]
            local.append(paths)
        outs = [root / f"out-{i}" for i in range(len(stages))]
        for out in outs:
            out.mkdir()
        start = time.time()
        results, ran = compute(stages, local, outs, ctx)
        return results, [pack(out) for out in outs], {"node": node(), "ran": ran}, time.time() - start


def resources(unit: Unit, runner, gpus: bool) -> dict:
    """A unit's Ray resource request: `runner.ray_cpus` of its kind (1 by default) and, where the
    cluster has GPUs and the stage declares `network`, `runner.ray_gpus` of them."""
    stage = unit.stages[0]
    out = {"num_cpus": float(runner.ray_cpus.get(stage.kind, 1.0))}
    if gpus and stage.network:
        out["num_gpus"] = runner.ray_gpus
    return out


def last_line(exc: Exception) -> str:
    """A remote error's last traceback line (the exception itself), else the error as it is."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(exc).__name__


class RayExecutor:
    """Units as Ray tasks on the cluster at `address` (none: Ray on this machine alone); `runner`
    is the [runner] config. Any number of units at once: Ray queues what the cluster cannot take
    yet."""
    slots = math.inf

    def __init__(self, ws: Workspace, show, runner, address: str | None, device: str):
        from ray.util.queue import Queue

        self.ray = start(address)
        self.gpus = device != "cpu" and self.ray.cluster_resources().get("GPU", 0) > 0
        self.ws, self.show, self.runner, self.device = ws, show, runner, device
        self.events, self.task = Queue(), self.ray.remote(run_unit)
        self.refs: dict[str, object] = {}  # upstream folder -> object ref of its files
        self.running: dict = {}  # future -> (unit, members, keep, locks)
        self.ended: list = []

    def ref_of(self, folder) -> object:
        if str(folder) not in self.refs:
            self.refs[str(folder)] = self.ray.put(pack(Path(folder)))
        return self.refs[str(folder)]

    def submit(self, unit: Unit) -> None:
        members = list(zip(unit.stages, unit.rows))
        locks = ExitStack()
        keep = lock_members(self.ws, members, locks, unit.ctx)
        if all(keep):  # another run built them meanwhile
            locks.close()
            self.ended.append((unit, [self.ws.meta(s.kind, r["key"]) for s, r in members]))
            return
        request = resources(unit, self.runner, self.gpus)
        ctx = replace(unit.ctx, progress=QueueProgress(self.events, unit.first()),
                      processes=max(1, int(request["num_cpus"])))
        given = [{k: self.ref_of(v) for k, v in i.items()} for i in unit.inputs]
        future = self.task.options(**request, max_retries=self.runner.ray_retries).remote(
            unit.stages, given, ctx)
        self.running[future] = (unit, members, keep, locks)

    def wait(self, timeout: float) -> list:
        from ray.util.queue import Empty

        done = self.ray.wait(list(self.running), num_returns=1, timeout=timeout)[0] \
            if self.running else []
        drain(self.events, self.show, Empty)
        ended, self.ended = self.ended, []
        for future in done:
            unit, members, keep, locks = self.running.pop(future)
            with locks:
                try:
                    results, files, how, seconds = self.ray.get(future)
                    tmps = begin_outputs(self.ws, members)
                    for tmp, produced, kept in zip(tmps, files, keep):
                        if not kept:
                            unpack(produced, tmp)
                    ended.append((unit, finish_outputs(self.ws, members, tmps, results, keep,
                                                       seconds, self.device, how)))
                except Exception as exc:  # noqa: BLE001  (Ray's error types vary)
                    ended.append((unit, RuntimeError(last_line(exc))))
        return ended

    def close(self) -> None:
        for _, _, _, locks in self.running.values():
            locks.close()
