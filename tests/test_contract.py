"""The code part of the cache key on the real stage graph: comment edits keep a run cached, a
changed constant reruns the stages that use it and their dependants only."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEYS = ("import json; from synthgap.runner import dag; from synthgap.study import config; "
        "from synthgap.study.graph import build_graph; n, c = config.load('smoke'); "
        "print(json.dumps({k: v['key'] for k, v in dag.compute_keys(build_graph(n, c)).items()}))")


def keys(tree: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", KEYS], cwd=tree, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_comment_edits_keep_keys_and_a_constant_reruns_its_stages_only(tmp_path):
    tree = tmp_path / "tree"
    for name in ("synthgap", "renderers", "gan", "classifiers", "configs"):
        shutil.copytree(ROOT / name, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
    before = keys(tree)
    digits = tree / "classifiers" / "digits.py"
    edit(digits, '"""The downstream digit classifier', '"""The digit classifier downstream')
    edit(digits, "# optimiser steps", "# optimiser steps (a comment edit)")
    assert keys(tree) == before  # a finished smoke run stays fully cached
    edit(tree / "renderers" / "composite.py", "clamp_min(1e-12)", "clamp_min(1e-11)")
    after = keys(tree)
    changed = {n for n in before if before[n] != after[n]}
    assert changed == {n for n in before if n.startswith(
        ("render_composites/", "classify/real+composite/", "gap/composite-"))} | {"report"}
