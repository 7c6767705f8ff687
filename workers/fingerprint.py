"""The code part of a stage's cache key: a hash of the source the stage runs.

A stage's fingerprint covers its own function in `workers/stages.py` (nested
functions included), the helpers of that module it calls (`_train_params`, ...),
and the full source of every `workers.pipeline` module those reach, directly or
through the pipeline modules' own imports.
Libraries count by version (cache.LIBRARY_VERSIONS), not here. So an edit to
`workers/pipeline/evaluate.py` changes the evaluate key (and, through its output
digests, whatever follows) and not preprocess or train.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
from collections.abc import Callable, Iterator
from types import CodeType, ModuleType
from typing import Any

# The package whose modules a fingerprint reads whole: the pure ML code the stages call.
PACKAGE = "workers.pipeline"


def fingerprint(func: Callable[..., Any]) -> str:
    """sha256 (hex, first 16 characters) of `func`'s source, its module's helpers it calls
    and the pipeline modules they reach."""
    digest = hashlib.sha256()
    for helper in _helpers(func):
        digest.update(inspect.getsource(helper).encode())
    for name in sorted(reached_modules(func)):
        digest.update(f"\0{name}\0".encode())
        digest.update(_source(name))
    return digest.hexdigest()[:16]


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


def reached_modules(func: Callable[..., Any]) -> set[str]:
    """The `workers.pipeline` modules `func` (and its helpers) use, closed over their imports
    of each other."""
    found: set[str] = set()
    for helper in _helpers(func):
        for name in _names(helper.__code__):
            obj = func.__globals__.get(name)
            module = obj.__name__ if isinstance(obj, ModuleType) else getattr(obj, "__module__", None)
            if isinstance(module, str) and _in_package(module):
                found.add(module)
    todo = list(found)
    while todo:
        for imported in _imports(todo.pop()):
            if imported not in found:
                found.add(imported)
                todo.append(imported)
    return found


def _names(code: CodeType) -> Iterator[str]:
    """Every global or attribute name the code (and the functions nested in it) refers to."""
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, CodeType):
            yield from _names(const)


def _in_package(module: str) -> bool:
    return module == PACKAGE or module.startswith(PACKAGE + ".")


def _source(module: str) -> bytes:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(module)
    with open(spec.origin, "rb") as f:
        return f.read()


def _imports(module: str) -> set[str]:
    """The pipeline modules `module` imports (absolute or relative, `from X import mod` too)."""
    tree = ast.parse(_source(module))
    package = module if module == PACKAGE else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            if _in_package(base):
                out.add(base)
                # `from workers.pipeline import data` imports a module, not a name.
                out.update(f"{base}.{a.name}" for a in node.names if _is_module(f"{base}.{a.name}"))
    return {m for m in out if _in_package(m) and _is_module(m)}


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a name inside a module, not a submodule
        return False
