"""The code part of a stage's cache key: a hash of the source the stage runs.

A stage's fingerprint covers its own function in `workers/stages.py` (nested
functions included), the helpers of that module it calls (`_train_params`, ...),
and every definition (function, class, constant) of the modules that shape what a
stage writes (COVERED: the pure ML code in `workers.pipeline`, and the platform
modules whose code decides a stage's stored output or its key: `workers.store`,
`workers.contracts`, `workers.usercode`, `workers.registry`, `workers.cache`) that
those reach, directly or through the names those definitions use, as code (comments
and layout change nothing). Names reached only through attributes (`rt.store.put`,
`model.metric_names`) cannot be followed from the code, so ROOTS names those
definitions for every stage: the artifact store (how outputs are written and
named, `put_json`'s encoding is the evaluation report's digest) and the ModelSpec
(the derived fields the stages read). Libraries count by version
(cache.LIBRARY_VERSIONS), not here. So an edit to `plot_data` in
`workers/pipeline/evaluate.py` changes the evaluate key only; an edit to its
`score`, which train's CV also runs, changes both; an edit to `ArtifactStore`
changes every stage's; later stages follow through their input digests.

Not covered, on purpose: the Celery edge (`StageTask`: begin, retries, slots), the
index writers (tracking, journal, writes) and settings. They decide when and how
often a step runs and where its records go, not what it computes; counting them
would throw away every cached step at each edit of the machinery around it.
"""

from __future__ import annotations

import ast
import collections
import functools
import hashlib
import importlib.util
import inspect
from collections.abc import Callable, Iterator
from types import CodeType, ModuleType
from typing import Any

# The package whose modules a fingerprint reads whole: the pure ML code the stages call.
PACKAGE = "workers.pipeline"
# Every module (or package) whose definitions a fingerprint follows.
COVERED = (PACKAGE, "workers.store", "workers.contracts", "workers.usercode", "workers.registry",
           "workers.cache")
# Definitions every stage reaches through attributes only (see the module doc).
ROOTS = (("workers.store", "ArtifactStore"), ("workers.store", "digest_bytes"),
         ("workers.contracts", "ModelSpec"))


def fingerprint(func: Callable[..., Any]) -> str:
    """sha256 (hex, first 16 characters) of `func`'s source, its module's helpers it calls
    and the pipeline definitions they reach."""
    digest = hashlib.sha256()
    for helper in _helpers(func):
        digest.update(inspect.getsource(helper).encode())
    for module, name in sorted(reached_definitions(func)):
        digest.update(f"\0{module}:{name}\0".encode())
        digest.update(_source(module) if name == WHOLE else _definition(module, name)[0].encode())
    return digest.hexdigest()[:16]


# A definition name meaning "the whole module" (a module used as such, or a name not found).
WHOLE = "*"


def _helpers(func: Callable[..., Any]) -> list[Callable[..., Any]]:
    """`func` and the functions of its own module it calls, transitively, in the order met."""
    found = [func]
    for current in found:
        for name in _names(current.__code__):
            obj = func.__globals__.get(name)
            if (inspect.isfunction(obj) and obj.__module__ == func.__module__
                    and obj not in found):
                found.append(obj)
    return found


def reached_definitions(func: Callable[..., Any]) -> set[tuple[str, str]]:
    """(module, top-level name) of every COVERED definition `func` and its helpers use, and
    the ROOTS, closed over the names those definitions use (in their module or imported
    from another covered module). A module used whole counts whole."""
    todo: list[tuple[str, str]] = list(ROOTS)
    for helper in _helpers(func):
        for name in _names(helper.__code__):
            obj = func.__globals__.get(name)
            if isinstance(obj, ModuleType) and _in_package(obj.__name__):
                todo.append((obj.__name__, WHOLE))
            elif isinstance(getattr(obj, "__module__", None), str) and _in_package(obj.__module__):
                todo.append((obj.__module__, getattr(obj, "__name__", name)))
    found: set[tuple[str, str]] = set()
    while todo:
        item = todo.pop()
        module, name = item
        if item in found:
            continue
        if name != WHOLE and name not in _nodes(module):
            item = (module, WHOLE)  # defined in a way not parsed here: take the module
        found.add(item)
        if item[1] == WHOLE:
            todo += [(m, WHOLE) for m in _imports(module)]
            continue
        _, used = _definition(module, name)
        imported = _imported_names(module)
        for ref in used:
            if ref in _nodes(module):
                todo.append((module, ref))
            elif ref in imported:
                todo.append(imported[ref])
    return found


def reached_modules(func: Callable[..., Any]) -> set[str]:
    """The COVERED modules whose definitions `func` (and its helpers) use."""
    return {module for module, _ in reached_definitions(func)}


@functools.cache
def _nodes(module: str) -> dict[str, ast.stmt]:
    """Each top-level name of a module and the statement that defines it; the last one wins."""
    out: dict[str, ast.stmt] = {}
    for node in _tree(module).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names = [node.name]
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
        elif isinstance(node, ast.Try | ast.If):  # `try: import x except ImportError: x = None`
            names = [n.id for n in ast.walk(node) if isinstance(n, ast.Name)
                     and isinstance(n.ctx, ast.Store)]
            names += [a.asname or a.name for n in ast.walk(node) if isinstance(n, ast.ImportFrom)
                      for a in n.names]
        else:
            continue
        for name in names:
            out[name] = node
    return out


@functools.cache
def _definition(module: str, name: str) -> tuple[str, frozenset[str]]:
    """A top-level definition's code (comments and layout left out, so they change nothing)
    and the names it uses. Only the definitions a stage reaches are unparsed and walked (all
    of them were ~a third of the fingerprints' 0.36-0.55 s of CPU at every worker start)."""
    node = _nodes(module)[name]
    return ast.unparse(node), frozenset(n.id for n in ast.walk(node) if isinstance(n, ast.Name))


@functools.cache
def _imported_names(module: str) -> dict[str, tuple[str, str]]:
    """Names a module imports from other pipeline modules: local name -> (module, name)."""
    out: dict[str, tuple[str, str]] = {}
    for node in _statements(_tree(module)):
        if isinstance(node, ast.ImportFrom) and _in_package(base := _base(module, node)):
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out[alias.asname or alias.name] = (sub, WHOLE) if _is_module(sub) else (base, alias.name)
    return out


def _base(module: str, node: ast.ImportFrom) -> str:
    """The absolute module an ImportFrom names (relative imports resolved)."""
    base = node.module or ""
    if node.level:
        package = module if module == PACKAGE else module.rpartition(".")[0]
        parts = package.split(".")
        base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
    return base


def _names(code: CodeType) -> Iterator[str]:
    """Every global or attribute name the code (and the functions nested in it) refers to."""
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, CodeType):
            yield from _names(const)


def _in_package(module: str) -> bool:
    return any(module == covered or module.startswith(covered + ".") for covered in COVERED)


@functools.cache
def _tree(module: str) -> ast.Module:
    return ast.parse(_source(module))


def forget_parsed() -> None:
    """Drop the parsed modules (~6 MB in each worker) once the fingerprints are computed; the
    definitions' code and names stay, and anything asked again is parsed again."""
    _tree.cache_clear()
    _nodes.cache_clear()


def _statements(tree: ast.Module) -> Iterator[ast.AST]:
    """The statements of a tree (nested ones too), in `ast.walk`'s order, without walking
    into the expressions, where no import can be (most of a module's nodes)."""
    todo: collections.deque[ast.AST] = collections.deque([tree])
    while todo:
        node = todo.popleft()
        todo.extend(c for c in ast.iter_child_nodes(node)
                    if isinstance(c, ast.stmt | ast.excepthandler | ast.match_case))
        yield node


@functools.cache
def _source(module: str) -> bytes:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(module)
    with open(spec.origin, "rb") as f:
        return f.read()


def _imports(module: str) -> set[str]:
    """The pipeline modules `module` imports (absolute or relative, `from X import mod` too)."""
    out: set[str] = set()
    for node in _statements(_tree(module)):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and _in_package(base := _base(module, node)):
            out.add(base)
            # `from workers.pipeline import data` imports a module, not a name.
            out.update(f"{base}.{a.name}" for a in node.names if _is_module(f"{base}.{a.name}"))
    return {m for m in out if _in_package(m) and _is_module(m)}


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a name inside a module, not a submodule
        return False
