"""The runner's workspace on disk: one cache folder per stage output, locks, leftovers of killed
runs, atomic JSON writes and publishing a stage's files into the workspace root."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

META = "meta.json"


class Workspace:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.cache = self.root / "cache"

    def out(self, kind: str, key: str) -> Path:
        return self.cache / kind / key

    def is_done(self, kind: str, key: str) -> bool:
        return (self.out(kind, key) / META).is_file()

    def meta(self, kind: str, key: str) -> dict:
        return json.loads((self.out(kind, key) / META).read_text())

    @contextmanager
    def lock(self, path: Path, blocking: bool = True, on_wait: Callable | None = None):
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not blocking:
                    yield False
                    return
                if on_wait:
                    on_wait()
                fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield True
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def stage_lock(self, kind: str, key: str, **kw):
        return self.lock(self.cache / kind / f".{key}.lock", **kw)

    def clean_leftovers(self) -> list[Path]:
        """Remove half-written outputs of killed runs (their lock is free); return what went."""
        removed = []
        for tmp in sorted(self.cache.glob("*/.tmp-*")) + sorted(self.cache.glob("*/.old-*")):
            key = tmp.name.split("-", 1)[1]
            with self.stage_lock(tmp.parent.name, key, blocking=False) as got:
                if got and tmp.exists():
                    shutil.rmtree(tmp)
                    removed.append(tmp)
        return removed

    def last_runs(self) -> dict[str, dict]:
        """stage name -> meta of its most recent finished run, over all keys in the cache."""
        latest: dict[str, dict] = {}
        for path in self.cache.glob(f"*/*/{META}"):
            try:
                meta = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            name = meta.get("name")
            if name and meta.get("finished", 0) >= latest.get(name, {}).get("finished", -1):
                latest[name] = meta
        return latest


def write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def publish(out: Path, ws: Workspace) -> None:
    """Copy a stage's files (not its meta) into the workspace root, replacing what was there."""
    with ws.lock(ws.root / ".publish.lock"):
        for item in out.iterdir():
            if item.name == META:
                continue
            dest = ws.root / item.name
            tmp = ws.root / f".{item.name}.publishing"
            if tmp.exists():
                shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
            shutil.copytree(item, tmp) if item.is_dir() else shutil.copy2(item, tmp)
            if dest.is_dir():
                shutil.rmtree(dest)
            os.replace(tmp, dest)
