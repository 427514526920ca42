"""What the benchmarks read from a study's workspace (`pipeline run ... --workdir`): its one cached
split and its one cached oracle. A workspace that holds none, or several, is an error naming what
was found; `run` prints it as one line and exits with status 2."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def run(main) -> int:
    """A benchmark's `main()`, its LookupError (a workspace without what it needs) one line and 2."""
    try:
        return main()
    except LookupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def one_cached(workdir: Path, kind: str, file: str) -> Path:
    """The path of `file` in the single cached stage of `kind`; LookupError if there is not one."""
    hits = sorted((Path(workdir) / "cache" / kind).glob(f"*/{file}"))
    if len(hits) != 1:
        raise LookupError(f"{workdir} needs exactly one cached {kind} stage (found {len(hits)}); "
                          "give the workspace of one study that ran (pipeline run ... --workdir)")
    return hits[0]


def holdout(workdir: Path):
    """The split's held-out training digits (an ImageSet): outside every budget, never the test set."""
    from synthgap.data.imageset import load_imageset

    return load_imageset(one_cached(workdir, "split", "holdout.npz"))


def oracle(workdir: Path):
    """The study's oracle classifier, on the CPU."""
    from classifiers.digits import load_model

    meta = one_cached(workdir, "oracle", "meta.json")
    return load_model(meta.parent / "model.safetensors", json.loads(meta.read_text())["params"]["classifier"]["width"])
