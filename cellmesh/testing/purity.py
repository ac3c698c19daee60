"""Read a module's imports with ``ast``: how tests prove purity, layering and no cycles."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path


def module_imports(source: str, module: str) -> list[tuple[int, str]]:
    """Every (line, absolute module name) imported by ``source``, relative ones resolved.

    ``module`` is the dotted name of the module the source belongs to (to
    resolve ``from . import x``). A call to ``__import__`` is reported as the
    name ``"__import__"``.
    """
    package = module.rsplit(".", 1)[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
                if node.module is None:
                    found += [(node.lineno, f"{name}.{alias.name}") for alias in node.names]
                    continue
            else:
                name = node.module or ""
            found.append((node.lineno, name))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "__import__"
        ):
            found.append((node.lineno, "__import__"))
    return found


def package_modules(package_dir: Path, package: str) -> dict[str, Path]:
    """Every module of a package tree: dotted name -> file (``pkg/__init__.py`` is ``pkg``)."""
    modules: dict[str, Path] = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = [package, *path.relative_to(package_dir).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _source_module(name: str, path: Path) -> str:
    """The name relative imports resolve against (a package's ``__init__`` is inside it)."""
    return f"{name}.__init__" if path.name == "__init__.py" else name


def import_graph(package_dir: Path, package: str) -> dict[str, dict[str, int]]:
    """Module -> {imported module of the same package: first line}, from the source alone.

    Every import counts, wherever it stands (inside functions and ``if
    TYPE_CHECKING:`` blocks too: an import cycle hidden from the type checker
    is still a cycle in the design). ``from pkg import name`` is an edge to
    ``pkg.name`` when that is a module, else to ``pkg``; a name that is not a
    module of the package resolves to its longest module prefix.
    """
    modules = package_modules(package_dir, package)
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        edges: dict[str, int] = {}
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for line, imported in _imports_with_names(tree, _source_module(name, path)):
            target = imported
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                edges.setdefault(target, line)
        graph[name] = edges
    return graph


def _imports_with_names(tree: ast.AST, module: str) -> list[tuple[int, str]]:
    """Like :func:`module_imports`, but ``from a import b`` also yields ``a.b``."""
    package = module.rsplit(".", 1)[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found += [(node.lineno, f"{name}.{alias.name}") for alias in node.names]
    return found


def import_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Each strongly connected group of two or more modules (or a self-loop), sorted.

    Tarjan's algorithm, iterative; an empty list means the graph is acyclic.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    groups: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, list[str]]] = [(start, sorted(graph[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, todo = work[-1]
            if todo:
                nxt = todo.pop()
                if nxt not in graph:
                    continue
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(graph[nxt])))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1 or node in graph[node]:
                    groups.append(sorted(group))
    return sorted(groups)


def layer_violations(
    graph: dict[str, dict[str, int]], layer_of: Callable[[str], int]
) -> list[str]:
    """Every import of a module by a module of a lower layer, as a readable line."""
    out = []
    for module in sorted(graph):
        for target, line in sorted(graph[module].items()):
            if layer_of(target) > layer_of(module):
                out.append(f"{module} (line {line}) imports the higher layer {target}")
    return out
