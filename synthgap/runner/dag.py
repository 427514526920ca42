"""The runner's model and plan: stages, their cache keys, what must run and why (build.py builds
the outputs, run.py schedules them).

A stage is a function `fn(params, inputs, out, ctx) -> metrics` that writes its files into the folder
`out`. Its cache key hashes its kind, its canonical params, the keys of its upstream stages and the
code it runs (syntax trees of the stage function and of the modules it imports from the packages
it names; codehash.py); an output folder `cache/<kind>/<key>/` holding `meta.json` is done.
Outputs are built in `cache/<kind>/.tmp-<key>/`, `meta.json` is written last and the folder is
renamed into place, so an interrupted stage never looks done. A lock file per key (`flock`, released
by the kernel when a process dies) keeps two runs from building one output at the same time and
tells a leftover of a killed run from work in progress.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Callable

from synthgap.devices import Precision
from synthgap.runner.codehash import code_hash
from synthgap.runner.workspace import Workspace


@dataclass
class Stage:
    """A node of the graph. The first number among the metrics its function returns is what its
    line in the log shows."""
    name: str                                   # unique in the graph, e.g. "fit/a/s0" (kind "fit")
    fn: Callable                                # fn(params, inputs, out, ctx) -> dict of metrics
    params: dict = field(default_factory=dict)  # JSON-able; part of the key
    deps: dict = field(default_factory=dict)    # input name -> upstream stage name
    code: tuple = ()                 # modules whose code is part of the key besides those the stage
                                     # function imports (found by code_hash)
    publish: bool = False                       # copy its files into the workspace root after a run
    outs: tuple = ()                            # files it must write (checked before it is done)
    group: tuple = ()                # names of the stages computed with it in one call (itself
                                     # included): whenever one must run, all are computed, so a
                                     # member's result never depends on which others were cached
    group_fn: Callable | None = None  # group_fn([params], [inputs], [out], ctx) -> [metrics]
    network: bool = False            # it trains or applies a network: it runs in the run's
                                     # precision (part of its key), and on a Ray cluster with GPUs
                                     # it asks for one
    packages: tuple = ()             # the top-level packages whose code enters its key (default:
                                     # its function's own); others' versions are in its meta.json

    @property
    def kind(self) -> str:
        return self.name.split("/", 1)[0]


@dataclass
class Context:
    """What a stage function gets besides its params and inputs."""
    device: str = "auto"
    data_dir: str | None = None
    progress: Callable | None = None  # progress(done, total, description=None)
    threads: int | None = None        # torch threads (part of the key: `[runner] threads`)
    processes: int | None = None      # processes for CPU-bound work of a stage's own, whose
                                      # output does not depend on their number
    deterministic: bool = True        # on CUDA: deterministic algorithms where the ops allow
    precision: Precision | None = None  # how a network stage's networks compute (part of its
                                        # key); None: the device's default (devices.py)

    def workers(self) -> int:
        """Processes a stage may use for CPU-bound work of its own."""
        return self.processes or os.cpu_count() or 1

    def report(self, done: int, total: int, description: str | None = None) -> None:
        if self.progress is not None:
            self.progress(done, total, description)


class StageError(Exception):
    """A stage failed; the message names the stage."""


# ----------------------------------------------------------------------------------------- keys
def canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def topo_order(stages: dict[str, Stage]) -> list[str]:
    order, state = [], {}

    def visit(name, path):
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            raise ValueError(f"the stage graph has a cycle: {' -> '.join(path + [name])}")
        if name not in stages:
            raise ValueError(f"stage {path[-1]} needs {name}, which is not in the graph")
        state[name] = "visiting"
        for dep in stages[name].deps.values():
            visit(dep, path + [name])
        state[name] = "done"
        order.append(name)

    for name in stages:
        visit(name, [])
    return order


def compute_keys(stages: dict[str, Stage], env: dict | None = None) -> dict[str, dict]:
    """name -> {key, code, upstream, env} for every stage, in topological order. `env` (run_env:
    the torch threads and the device type a run uses, and its precision, which only a `network`
    stage's env keeps) is part of every key: one key, one result."""
    out = {}
    for name in topo_order(stages):
        s = stages[name]
        upstream = {k: out[d]["key"] for k, d in sorted(s.deps.items())}
        code = code_hash(s)
        mine = {k: v for k, v in (env or {}).items() if s.network or k != "precision"}
        keyed = [s.kind, s.params, upstream, code] + ([mine] if mine else [])
        key = hashlib.sha256(canonical(keyed).encode()).hexdigest()[:20]
        out[name] = {"key": key, "code": code, "upstream": upstream, "env": mine}
    return out


# ----------------------------------------------------------------------------------------- plan
def brief(value) -> str:
    """A param's value in a reason: its repr, or for a long list (a group's members) its length."""
    text = repr(value)
    if len(text) > 60 and isinstance(value, (list, tuple)):
        return f"[{len(value)} items]"
    return text


def flat(params: dict, prefix: str = "") -> dict:
    """Params with the values of nested tables under dotted names: {"a": {"b": 1}} -> {"a.b": 1}."""
    out = {}
    for k, v in params.items():
        if isinstance(v, dict) and v:
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def why(stage: Stage, info: dict, previous: dict | None) -> str:
    """Why `stage` must run: what differs from its last finished run."""
    if previous is None:
        return "missing"
    reasons = []
    old, new = flat(previous.get("params", {})), flat(stage.params)
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if changed:
        reasons.append("params changed: " + ", ".join(
            f"{k} {brief(old.get(k))}->{brief(new.get(k))}" for k in changed))
    if previous.get("code") != info["code"]:
        reasons.append("code changed")
    if previous.get("env", {}) != info["env"]:
        old_env = previous.get("env", {})
        reasons.append("run environment changed: " + ", ".join(
            f"{k} {old_env.get(k)!r}->{v!r}" for k, v in info["env"].items() if old_env.get(k) != v))
    ups = sorted(stage.deps[k] for k, v in info["upstream"].items()
                 if previous.get("upstream", {}).get(k) != v)
    if ups:
        reasons.append("upstream changed: " + ", ".join(ups[:3]) + (" ..." if len(ups) > 3 else ""))
    return "; ".join(reasons) or "missing (output removed)"


def needed(stages: dict[str, Stage], only: list[str] | None) -> list[str]:
    """Stages matching the `only` globs plus everything they need upstream, in order."""
    order = topo_order(stages)
    if not only:
        return order
    keep: set[str] = set()
    stack = [n for n in order if any(fnmatch.fnmatchcase(n, g) for g in only)]
    if not stack:
        raise ValueError(f"--only {' '.join(only)} matches no stage; `pipeline dag` lists them")
    while stack:  # a stage comes with its group, and everything they need
        n = stack.pop()
        if n not in keep:
            keep.add(n)
            stack.extend([*stages[n].deps.values(), *stages[n].group])
    return [n for n in order if n in keep]


def plan(stages: dict[str, Stage], ws: Workspace, only=None, force=None,
         env: dict | None = None) -> list[dict]:
    """One row per stage to consider: name, key, run (bool), reason, and rebuild (bool: run even
    where an output is in place, because it is forced or damaged or its input is rebuilt). `env`
    enters every key (compute_keys)."""
    keys = compute_keys(stages, env)
    previous = ws.last_runs()
    rows, damaged = [], set()
    for name in needed(stages, only):
        s, info = stages[name], keys[name]
        forced = any(fnmatch.fnmatchcase(name, g) for g in force or [])
        hurt = sorted(d for d in s.deps.values() if d in damaged)
        rebuild = forced
        if forced:
            run, reason = True, "forced"
        elif ws.is_done(s.kind, info["key"]):
            bad = ws.damaged(s.kind, info["key"])
            run, reason = (True, f"output damaged: {', '.join(bad)}") if bad else (False, "cached")
            if hurt and not bad:  # its input is rebuilt: so is it
                run, reason = True, f"upstream damaged: {', '.join(hurt[:3])}"
            if run:
                damaged.add(name)
                rebuild = True
        else:
            run, reason = True, why(s, info, previous.get(name))
        rows.append({"name": name, "key": info["key"], "run": run, "reason": reason,
                     "rebuild": rebuild, **info})
    if force and not any(r["reason"] == "forced" for r in rows):
        raise ValueError(f"--force {' '.join(force)} matches no stage; `pipeline dag` lists them")
    return rows


def draw(stages: dict[str, Stage], fmt: str = "text") -> str:
    """The graph as text (each stage with what it needs), Mermaid or Graphviz dot."""
    order = topo_order(stages)
    ids = {n: f"s{i}" for i, n in enumerate(order)}
    lines = {"text": [], "mermaid": ["graph LR"], "dot": ["digraph pipeline {", "  rankdir=LR;"]}[fmt]
    for n in order:
        deps = sorted(set(stages[n].deps.values()))
        if fmt == "text":
            shown = ", ".join(deps[:4]) + (f", ... ({len(deps)} in all)" if len(deps) > 4 else "")
            lines.append(f"{n}" + (f"  <- {shown}" if deps else ""))
        elif fmt == "mermaid":
            lines += [f'  {ids[n]}["{n}"]'] + [f"  {ids[d]} --> {ids[n]}" for d in deps]
        else:
            lines += [f'  {ids[n]} [label="{n}"];'] + [f"  {ids[d]} -> {ids[n]};" for d in deps]
    return "\n".join(lines + (["}"] if fmt == "dot" else []))
