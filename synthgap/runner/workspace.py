"""The runner's workspace on disk: one cache folder per stage output, locks, leftovers of killed
runs, atomic JSON writes and publishing a stage's files into the workspace root."""

from __future__ import annotations

import fcntl
import hashlib
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

    def damaged(self, kind: str, key: str, full: bool = False) -> list[str]:
        """The files of a finished stage that no longer match what it wrote (missing, or another
        size, or other bytes). A file whose size and modification time are as recorded counts as
        intact unless `full` (then every file is re-hashed, as `pipeline verify` does)."""
        out = self.out(kind, key)
        bad = []
        for name, rec in self.meta(kind, key).get("outputs", {}).items():
            path = out / name
            try:
                st = path.stat()
            except OSError:
                bad.append(name)
                continue
            if st.st_size != rec["size"]:
                bad.append(name)
            elif (full or st.st_mtime_ns != rec["mtime_ns"]) and sha256(path) != rec["sha256"]:
                bad.append(name)
        return bad

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


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def record_outputs(out: Path) -> dict:
    """{relative path: sha256, size, mtime_ns} of every file a stage wrote (but its meta)."""
    rec = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file() and p.name != META):
        st = path.stat()
        rec[path.relative_to(out).as_posix()] = {"sha256": sha256(path), "size": st.st_size,
                                                 "mtime_ns": st.st_mtime_ns}
    return rec


def write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def publish(out: Path, ws: Workspace, dest: Path | None = None) -> None:
    """Copy a stage's files (not its meta) into `dest` (the workspace root unless given),
    replacing what was there."""
    dest = ws.root if dest is None else dest
    dest.mkdir(parents=True, exist_ok=True)
    with ws.lock(dest / ".publish.lock"):
        for item in out.iterdir():
            if item.name == META:
                continue
            target = dest / item.name
            tmp = dest / f".{item.name}.publishing"
            if tmp.exists():
                shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
            shutil.copytree(item, tmp) if item.is_dir() else shutil.copy2(item, tmp)
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(tmp, target)
