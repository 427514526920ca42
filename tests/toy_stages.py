"""Tiny stage functions for the runner's tests: they write numbers to files and count their calls."""

import json
import os
import time
from pathlib import Path


def log_call(out, name):
    log = os.environ.get("TOY_CALL_LOG")
    if log:
        with open(log, "a") as fh:
            fh.write(name + "\n")


def source(params, inputs, out, ctx):
    log_call(out, "source")
    (out / "value.json").write_text(json.dumps(params["value"]))
    return {"value": params["value"]}


def double(params, inputs, out, ctx):
    log_call(out, "double")
    value = json.loads((Path(inputs["x"]) / "value.json").read_text())
    if params.get("fail"):
        (out / "partial.json").write_text("half")
        raise RuntimeError("asked to fail")
    (out / "value.json").write_text(json.dumps(value * 2))
    return {"value": value * 2}


def say_pid(path: str) -> None:
    """Write this process's id to `path`, whole or not at all: the test reads it while we run."""
    tmp = Path(path + ".tmp")
    tmp.write_text(str(os.getpid()))
    tmp.replace(path)


def sleeper(params, inputs, out, ctx):
    """Say which process runs it, then sleep: a stage to kill the runner under."""
    say_pid(params["pid_file"])
    time.sleep(params["seconds"])
    return {}


def total(params, inputs, out, ctx):
    log_call(out, "total")
    values = [json.loads((Path(p) / "value.json").read_text()) for p in inputs.values()]
    (out / "total.txt").write_text(str(sum(values)))
    return {"total": sum(values)}


def doubles(params_list, inputs_list, outs, ctx):
    """`double` for a group of stages in one call."""
    log_call(None, "doubles:" + ",".join(str(p["i"]) for p in params_list))
    return [double(p, i, o, ctx) for p, i, o in zip(params_list, inputs_list, outs)]


def slow_source(params, inputs, out, ctx):
    """`source` that first says which process runs it and sleeps: a stage to kill a worker under."""
    say_pid(params["pid_file"])
    time.sleep(params["seconds"])
    return source(params, inputs, out, ctx)
