"""The code part of a stage's cache key, found from the code itself: the syntax trees of the stage
function, of the definitions of its module it uses, and of every module it imports from the given
packages (the project's), transitively. Trees, not text: a comment or a docstring edit leaves the
key alone, a changed constant changes it. Modules of other packages (torch, numpy) are not hashed;
their versions are in each stage's meta.json."""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
from pathlib import Path
from typing import Callable


def _project(module: str, packages: tuple) -> bool:
    return module.split(".")[0] in packages


@functools.lru_cache(maxsize=None)
def _origin(module: str) -> str:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise ValueError(f"cannot find the source of module {module}")
    return spec.origin


def _source(module: str) -> str:
    """A module's source as on disk now."""
    return Path(_origin(module)).read_text()


@functools.lru_cache(maxsize=256)
def _facts(source: str, packages: tuple) -> tuple[str, tuple]:
    """(the dump of a module's syntax tree, the modules of `packages` it imports), once per source
    text: every stage of a graph asks for the same few modules."""
    tree = _parse(source)
    return ast.dump(tree), tuple(sorted(set(_imported(tree, packages).values())))


@functools.lru_cache(maxsize=256)
def _parse(source: str) -> ast.Module:
    """The syntax tree without its docstrings (comments are never in it)."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return tree


def _imported(node: ast.AST, packages: tuple) -> dict[str, str]:
    """Names bound by the import statements under `node` -> the module of `packages` each comes
    from."""
    out = {}
    for n in ast.walk(node):
        if isinstance(n, ast.Import):
            for a in n.names:
                out[a.asname or a.name.split(".")[0]] = a.name
        elif isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
            for a in n.names:
                sub = f"{n.module}.{a.name}"
                out[a.asname or a.name] = sub if _is_submodule(sub, packages) else n.module
    return {name: m for name, m in out.items() if _project(m, packages)}


@functools.lru_cache(maxsize=None)
def _is_submodule(name: str, packages: tuple) -> bool:
    """Whether `from package import name` names a module of one of `packages`."""
    parent = name.rpartition(".")[0]
    if not _project(parent, packages):
        return False
    spec = importlib.util.find_spec(parent)
    return bool(spec and spec.submodule_search_locations
                and importlib.util.find_spec(name) is not None)


def module_closure(module: str, packages: tuple) -> frozenset:
    """The module and every module of `packages` it imports, anywhere in it, transitively."""
    seen, todo = set(), [module]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(_facts(_source(m), packages)[1])
    return frozenset(seen)


def stage_code(fn: Callable, packages: tuple) -> tuple[list[str], set[str]]:
    """(syntax trees of the stage function and of the definitions of its module it uses, directly
    or through each other; the modules of `packages` it imports there or inside them)."""
    trees, modules = _stage_code(_source(fn.__module__), fn.__name__, packages)
    return list(trees), set(modules)


@functools.lru_cache(maxsize=256)
def _stage_code(source: str, name: str, packages: tuple) -> tuple[tuple, frozenset]:
    tree = _parse(source)
    defs = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defs[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                if isinstance(t, ast.Name):
                    defs[t.id] = node
    top_imports = _imported(ast.Module(body=[n for n in tree.body
                                            if isinstance(n, (ast.Import, ast.ImportFrom))],
                                      type_ignores=[]), packages)
    used, modules, todo = {}, set(), [name]
    while todo:
        name = todo.pop()
        if name in used or name not in defs:
            continue
        node = used[name] = defs[name]
        modules.update(_imported(node, packages).values())
        for n in ast.walk(node):
            if isinstance(n, ast.Name):
                todo.append(n.id)
                if n.id in top_imports:
                    modules.add(top_imports[n.id])
    return tuple(ast.dump(used[k]) for k in sorted(used)), frozenset(modules)


def code_hash(stage) -> str:
    """The code part of a stage's key: the syntax trees (so a comment or docstring edit changes
    nothing, a changed constant does) of the stage function, what it uses of its own module, and
    every module of `stage.packages` (by default the stage function's own top-level package) it
    imports, transitively, plus any named in `stage.code`."""
    packages = tuple(stage.packages) or (stage.fn.__module__.split(".")[0],)
    trees, modules = stage_code(stage.fn, packages)
    closure = set().union(*(module_closure(m, packages) for m in modules | set(stage.code)))
    h = hashlib.sha256(f"{stage.fn.__module__}:{stage.fn.__name__}".encode())
    for t in trees:
        h.update(t.encode())
    for module in sorted(closure):
        h.update(module.encode() + b"\0" + _facts(_source(module), packages)[0].encode())
    return h.hexdigest()[:16]
