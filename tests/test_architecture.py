"""The house rules, read from the code itself, so that they hold for every change:

- no import cycle between the project's modules (imports inside functions count);
- layers: the ground (errors, devices, settings, data) imports only the ground; the libraries
  (renderers, gan, classifiers) import the ground and each other; the generic runner imports the
  ground and itself, and names nothing of the study; only the command line imports `pipeline`;
  the study may import all the rest;
- no function over 80 lines, tests aside; a README of at most 150 lines;
- every relative link in README.md and docs/ resolves;
- every folder of code is a package (so setuptools finds it and a plain `pip install .` ships it),
  and every package's code enters the stage keys.

Each check is a function of the tree's root, so it can be pointed at another checkout.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PACKAGES = ("synthgap", "renderers", "gan", "classifiers", "configs")
GROUND = ("synthgap.errors", "synthgap.devices", "synthgap.settings", "synthgap.data")
LIBRARIES = ("renderers", "gan", "classifiers")
RUNNER = ("synthgap.runner",)
LONGEST = 80
README_LINES = 150
SKIPPED = {"tests", "venv", "build", "runs", "__pycache__"}
# words of the study that the generic runner's code, comments and docstrings never use
STUDY_WORDS = ("mnist", "digit", "refine", "classif", "font", "render", "oracle", "budget")


def within(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def module_files(root: Path) -> dict[str, Path]:
    """Dotted name -> file of every module of the project's packages, and `pipeline`."""
    found = {"pipeline": root / "pipeline.py"} if (root / "pipeline.py").is_file() else {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(root: Path) -> dict[str, set[str]]:
    """Module -> the project modules it imports anywhere in it (inside functions too)."""
    files = module_files(root)
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # a relative import
                    up = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                # `from package import module` names a module; `from module import name` does not
                found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in files else base
                             for a in node.names)
        graph[name] = {m for m in found if m in files and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles: each strongly connected group of more than one module (Tarjan)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def allowed(importer: str, imported: str) -> bool:
    """Whether the layers let `importer` import `imported`."""
    if imported == "pipeline":
        return False
    if within(importer, GROUND):
        return within(imported, GROUND)
    if within(importer, LIBRARIES):
        return within(imported, GROUND + LIBRARIES)
    if within(importer, RUNNER):
        return within(imported, GROUND + RUNNER)
    return True  # the study, the package roots, configs and the command line


def up_arrows(graph: dict[str, set[str]]) -> list[str]:
    return [f"{a} imports {b}" for a in sorted(graph) for b in sorted(graph[a]) if not allowed(a, b)]


def study_words_in_runner(root: Path) -> list[str]:
    """`file: word` for every word of the study found in the runner's modules."""
    return [f"{path.relative_to(root)}: {word}"
            for path in sorted((root / "synthgap" / "runner").glob("*.py"))
            for word in STUDY_WORDS if word in path.read_text().lower()]


def code_files(root: Path) -> list[Path]:
    """Every Python file of the project but its tests (and virtual environments, builds, runs)."""
    return sorted(p for p in root.rglob("*.py")
                  if not any(part in SKIPPED or part.startswith(".") or part.endswith(".egg-info")
                             for part in p.relative_to(root).parts[:-1]))


def long_functions(root: Path, limit: int = LONGEST) -> list[str]:
    """`file:line name (n lines)` for every function longer than `limit` lines, from `def` to its
    last line as `ast` gives them."""
    out = []
    for path in code_files(root):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    out.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({length} lines)")
    return out


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def broken_links(root: Path) -> list[str]:
    """`file: target` for every relative link in README.md and docs/ that names no file."""
    out = []
    for page in [root / "README.md", *sorted((root / "docs").rglob("*.md"))]:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # code blocks hold no links
        for target in LINK.findall(text):
            path = target.split("#", 1)[0]
            if not path or re.match(r"[a-z]+:", path):  # an anchor, or http:, mailto:
                continue
            if not (page.parent / path).exists():
                out.append(f"{page.relative_to(root)}: {target}")
    return out


# ------------------------------------------------------------------------------------- the rules
def test_no_import_cycle():
    found = cycles(imports(ROOT))
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_the_layers_import_only_downwards():
    found = up_arrows(imports(ROOT))
    assert not found, "imports against the layers: " + "; ".join(found)


def test_the_runner_knows_nothing_of_the_study():
    found = study_words_in_runner(ROOT)
    assert not found, "the study named in the runner: " + "; ".join(found)


def test_no_function_over_80_lines():
    found = long_functions(ROOT)
    assert not found, f"functions over {LONGEST} lines: " + "; ".join(found)


def test_the_readme_is_short():
    lines = len((ROOT / "README.md").read_text().splitlines())
    assert lines <= README_LINES, f"README.md has {lines} lines; at most {README_LINES}"


def test_relative_links_resolve():
    found = broken_links(ROOT)
    assert not found, "links to nothing: " + "; ".join(found)


def test_every_folder_of_code_is_a_package_that_installs_and_enters_the_keys():
    from synthgap.study.graph import CODE_PACKAGES

    folders = {p.parent for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    loose = sorted(str(f.relative_to(ROOT)) for f in folders if not (f / "__init__.py").is_file())
    assert not loose, f"folders of code without __init__.py (setuptools skips them): {loose}"
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert sorted(find["find"]["include"]) == sorted(f"{p}*" for p in PACKAGES)
    assert set(CODE_PACKAGES) == set(PACKAGES) - {"configs"}  # configs holds no stage code
