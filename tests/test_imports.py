"""The import graph of vmp_jax and pallas_kernels has no cycle (ARCHITECTURE.md: dependencies
point one way, and no two modules import each other).

Every import counts, also those inside functions (a lazy import still ties two modules
together), and importing `a.b.c` counts as importing the packages `a` and `a.b` too, since
Python runs their `__init__` first, except the importer's own enclosing packages, which are
already running.
"""

import ast
from pathlib import Path

from vmp_jax.experiment import REPO_ROOT

PACKAGES = ("vmp_jax", "pallas_kernels", "cpu_kernels")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO_ROOT / package).rglob("*.py"):
            parts = path.relative_to(REPO_ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _imported(tree: ast.AST, modules: dict) -> set[str]:
    """Our modules that a module's source imports (`from p import m` imports p.m when m is a
    module)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {n for n in names if n in modules}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        if path.name == "__init__.py":
            own.add(name)
        edges = set()
        for target in _imported(ast.parse(path.read_text()), modules):
            parts = target.split(".")
            chain = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
            edges |= {m for m in chain if m in modules and m not in own and m != name}
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_no_import_cycles():
    graph = _graph()
    assert "vmp_jax.train.loop" in graph["vmp_jax.cli.train"]  # imported inside a function
    assert _cycles(graph) == []


def _package(module: str) -> str:
    """The package a module belongs to: vmp_jax.<area>, or the top-level kernel package."""
    return (
        ".".join(module.split(".")[:2]) if module.startswith("vmp_jax.") else module.split(".")[0]
    )


def test_packages_depend_on_each_other_one_way():
    """Between packages too (ARCHITECTURE.md): what `train` and `evaluate` both need, the train
    state, its checkpoints and the compiled steps, lives below both in `vmp_jax.engine`."""
    packages: dict[str, set[str]] = {}
    for module, edges in _graph().items():
        own = _package(module)
        packages.setdefault(own, set()).update(_package(e) for e in edges if _package(e) != own)
    assert _cycles(packages) == []
    assert "vmp_jax.train" not in packages["vmp_jax.evaluate"]
    assert "vmp_jax.engine" in packages["vmp_jax.evaluate"]
