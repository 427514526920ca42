"""The runner's second executor: the same stage graph as Ray tasks, on one machine or a cluster.

The driver (`pipeline run --executor ray`) alone owns the workspace. For each stage (or group of
cells) whose inputs are done it takes the stages' locks, puts each upstream output folder into
Ray's object store once (its files as bytes, meta.json included) and submits a task with the
stage's resource request. The task writes those folders into a temporary directory on its node,
runs the stage function exactly as the local executor does, and returns its metrics, its output
files and the node it ran on; the driver writes them into `.tmp-<key>/`, records `meta.json` (with
the node) and renames the folder into place, as the local executor does. So a cluster run and a
local run fill the same cache, and a run may switch executors and resume.

Inputs travel through the object store, not a shared filesystem: a cluster needs no shared
storage, and every node fetches an upstream output at most once (Ray keeps a copy per node).
A worker process that dies mid-stage is retried by Ray (`[runner] ray_retries`); a stage that
raises fails the run with its name and the remote traceback's last line.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from synthgap.errors import UserError

# stages that train or apply a network: on a cluster with GPUs they ask for one
NETWORK_KINDS = ("classify", "oracle", "train_refiner", "refine", "tone", "gap")


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

    from synthgap.execute import compute

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


def resources(kind: str, runner: dict, gpus: bool) -> dict:
    """A stage kind's Ray resource request."""
    cpus = float(runner["ray_cpus"].get(kind, 1.0))
    out = {"num_cpus": cpus}
    if gpus and kind in NETWORK_KINDS:
        out["num_gpus"] = runner["ray_gpus"]
    return out


def run_ray(stages, units, finished, begin, end, show, unit_name, failed, ws, runner: dict,
            address: str | None, device: str) -> None:
    """Run `units` as Ray tasks as their dependencies finish (the local executor's contract)."""
    from ray.util.queue import Empty, Queue

    from synthgap.execute import QueueProgress, begin_outputs, finish_outputs, lock_members

    ray = start(address)
    gpus = device != "cpu" and ray.cluster_resources().get("GPU", 0) > 0
    events = Queue()
    task = ray.remote(run_unit)
    refs: dict[str, object] = {}  # upstream folder -> object ref of its files

    def ref_of(folder) -> object:
        if str(folder) not in refs:
            refs[str(folder)] = ray.put(pack(Path(folder)))
        return refs[str(folder)]

    waiting, running, failure = list(units), {}, None
    try:
        while waiting or running:
            if failure is None:
                for unit in list(waiting):
                    if not all(d in finished for n in unit for d in stages[n].deps.values()):
                        continue
                    waiting.remove(unit)
                    unit_stages, rows, inputs, _, ctx = begin(
                        unit, lambda name: QueueProgress(events, name))
                    members = list(zip(unit_stages, rows))
                    locks = ExitStack()
                    keep = lock_members(ws, members, locks, ctx)
                    if all(keep):
                        locks.close()
                        end(unit, [ws.meta(s.kind, r["key"]) for s, r in members])
                        continue
                    request = resources(unit_stages[0].kind, runner, gpus)
                    ctx.processes = max(1, int(request["num_cpus"]))
                    given = [{k: ref_of(v) for k, v in i.items()} for i in inputs]
                    future = task.options(**request, max_retries=runner["ray_retries"]).remote(
                        unit_stages, given, ctx)
                    running[future] = (unit, members, keep, locks)
            elif not running:
                break
            done, _ = ray.wait(list(running), num_returns=1, timeout=0.2)
            while True:
                try:
                    show(*events.get_nowait())
                except Empty:
                    break
            for future in done:
                unit, members, keep, locks = running.pop(future)
                with locks:
                    try:
                        results, files, how, seconds = ray.get(future)
                        tmps = begin_outputs(ws, members)
                        for tmp, produced, kept in zip(tmps, files, keep):
                            if not kept:
                                unpack(produced, tmp)
                        metas = finish_outputs(ws, members, tmps, results, keep, seconds,
                                               device, how)
                    except Exception as exc:  # the first failure stops new work
                        failure = failure or failed(unit_name(unit), last_line(exc))
                        continue
                end(unit, metas)
    finally:
        for _, _, _, locks in running.values():
            locks.close()
    if failure:
        raise failure


def last_line(exc: Exception) -> str:
    """A remote error's last traceback line (the exception itself), else the error as it is."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(exc).__name__
