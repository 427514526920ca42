"""Building a unit of work's outputs: the stages computed in one call (one stage, or a group), each
under its lock, into a temporary folder, its `meta.json` written last and the folder renamed into
place, so an interrupted stage never looks done. Every executor builds through here."""

from __future__ import annotations

import os
import platform
import shutil
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from synthgap.devices import device_name, on_cuda
from synthgap.runner.dag import Context, Stage
from synthgap.runner.workspace import META, Workspace, record_outputs, write_json


@dataclass
class Unit:
    """The stages computed in one call, with what building them needs: their plan rows, their
    inputs (per stage, input name -> upstream output folder) and the context they run in."""
    stages: list[Stage]
    rows: list[dict]
    inputs: list[dict]
    ctx: Context

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.stages)

    def first(self) -> str:
        """The unit's first stage to run: its progress shows there."""
        return next(s.name for s, r in zip(self.stages, self.rows) if r["run"])

    def label(self) -> str:
        return self.first() + (f" (group of {len(self.stages)})" if len(self.stages) > 1 else "")


def versions() -> dict:
    out = {"python": platform.python_version()}
    out.update({m: sys.modules[m].__version__ for m in ("torch", "numpy") if m in sys.modules})
    return out


def build(unit: Unit, ws_root: str) -> list[dict]:
    """Build the outputs of a unit's stages here, each under its own lock, each folder renamed into
    place on its own. Every member is computed; one already done (and not to be rebuilt) keeps its
    output. Return their metas."""
    ws = Workspace(Path(ws_root))
    members = list(zip(unit.stages, unit.rows))
    with ExitStack() as locks:
        keep = lock_members(ws, members, locks, unit.ctx)
        if all(keep):
            return [ws.meta(s.kind, r["key"]) for s, r in members]
        tmps = begin_outputs(ws, members)
        start = time.time()
        results, ran = compute(unit.stages, unit.inputs, tmps, unit.ctx)
        return finish_outputs(ws, members, tmps, results, keep, time.time() - start,
                              unit.ctx.device, {"ran": ran})


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
           "device_name": device_name(ctx.device)}
    if cuda:
        ran["deterministic"] = torch.are_deterministic_algorithms_enabled()
    return results, ran


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
