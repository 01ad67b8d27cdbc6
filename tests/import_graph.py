"""The project's import graph, read from source (nothing is imported), and the layering rules
it must keep: ``assets → ops → models``, no cycles between modules, no cycle between the
job packages of ``ops`` (a package never imports a package that imports it), ``ops`` free of
Dagster, and ``models`` on torch, numpy and the standard library alone."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from pathlib import Path

LAYERS = ("assets", "ops", "models")  # each may import only the ones after it
# Outside libraries a layer must not import (a prefix: ``dagster`` covers ``dagster_k8s``).
FORBIDDEN_LIBRARIES = {"ops": ("dagster",)}
# The only outside libraries ``models`` may import, besides the standard library.
MODEL_LIBRARIES = {"torch", "numpy"}


def project_modules(root: Path) -> dict[str, Path]:
    """Dotted name → file of every module under the layers' folders."""
    modules = {}
    for layer in LAYERS:
        for path in sorted((root / layer).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _is_package(modules: dict[str, Path], name: str) -> bool:
    return name in modules and modules[name].name == "__init__.py"


def _resolve(modules: dict[str, Path], dotted: str) -> str | None:
    """The longest project module that ``dotted`` names or lies in."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def _imported_names(path: Path) -> Iterable[tuple[ast.Import | ast.ImportFrom, list[str]]]:
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield node, [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            yield node, [node.module or ""]


def library_imports(root: Path) -> dict[str, set[str]]:
    """Top-level names of the outside libraries each module imports (function bodies too)."""
    modules = project_modules(root)
    found: dict[str, set[str]] = {}
    for name, path in modules.items():
        libraries = found.setdefault(name, set())
        for node, targets in _imported_names(path):
            if isinstance(node, ast.ImportFrom) and node.level:
                continue
            for target in targets:
                top = target.split(".")[0]
                if top not in LAYERS and top != "__future__":
                    libraries.add(top)
    return found


def forbidden_library_imports(libraries: dict[str, set[str]]) -> list[str]:
    """``ops`` importing Dagster; ``models`` importing anything beyond torch, numpy, stdlib."""
    problems = []
    for module, names in libraries.items():
        layer = module.split(".")[0]
        for library in sorted(names):
            banned = any(
                library == prefix or library.startswith(f"{prefix}_")
                for prefix in FORBIDDEN_LIBRARIES.get(layer, ())
            )
            outside_models = (
                layer == "models"
                and library not in MODEL_LIBRARIES
                and library not in sys.stdlib_module_names
            )
            if banned or outside_models:
                problems.append(f"{module} imports {library}")
    return sorted(problems)


def imports_of(modules: dict[str, Path], name: str) -> set[str]:
    """Project modules that ``name`` imports anywhere in its file (function bodies too)."""
    path = modules[name]
    package = name if _is_package(modules, name) else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from pkg import sub`` imports the submodule; ``from pkg import name`` the package.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            resolved = _resolve(modules, target)
            if resolved is not None and resolved != name:
                found.add(resolved)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    modules = project_modules(root)
    return {name: imports_of(modules, name) for name in modules}


def backward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Imports that go against ``assets → ops → models``."""
    rank = {layer: index for index, layer in enumerate(LAYERS)}
    return sorted(
        f"{source} imports {target}"
        for source, targets in graph.items()
        for target in targets
        if rank[target.split(".")[0]] < rank[source.split(".")[0]]
    )


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def unit_of(module: str) -> str:
    """The job package a module belongs to: ``ops.training.run`` → ``ops.training``; a module
    directly under a layer (``ops.device``) is its own unit."""
    return ".".join(module.split(".")[:2])


def unit_graph(graph: dict[str, set[str]], layer: str = "ops") -> dict[str, set[str]]:
    units: dict[str, set[str]] = {}
    for source, targets in graph.items():
        if source.split(".")[0] != layer or source == layer:
            continue
        edges = units.setdefault(unit_of(source), set())
        edges.update(
            unit_of(t)
            for t in targets
            if t.split(".")[0] == layer and unit_of(t) != unit_of(source)
        )
    return units


def describe(components: Iterable[list[str]]) -> list[str]:
    return [" ↔ ".join(component) for component in components]
