"""Read a module's imports with ``ast``: how tests prove purity, layering and no cycles."""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from pathlib import Path

_Statement = tuple[int, str, list[str] | None, bool]


def _statements(tree: ast.AST, module: str) -> Iterator[_Statement]:
    """Each import as (line, absolute module, names taken from it, bare).

    The names are None for ``import m`` and for a call to ``__import__``
    (yielded as the module ``"__import__"``). Relative imports are resolved
    against ``module``; ``bare`` marks ``from . import x`` (module left out),
    whose names can only be modules or package attributes.
    """
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, None, False
        elif isinstance(node, ast.ImportFrom):
            name = node.module or ""
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            bare = bool(node.level) and node.module is None
            yield node.lineno, name, [alias.name for alias in node.names], bare
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "__import__"
        ):
            yield node.lineno, "__import__", None, False


def module_imports(source: str, module: str) -> list[tuple[int, str]]:
    """Every (line, absolute module name) imported by ``source``, relative ones resolved.

    ``module`` is the dotted name of the module the source belongs to (to
    resolve ``from . import x``, reported as ``package.x``). A call to
    ``__import__`` is reported as the name ``"__import__"``.
    """
    found: list[tuple[int, str]] = []
    for line, name, names, bare in _statements(ast.parse(source), module):
        if names is not None and bare:
            found += [(line, f"{name}.{alias}") for alias in names]
        else:
            found.append((line, name))
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
        for line, base, names, _ in _statements(tree, _source_module(name, path)):
            # ``from a import b`` may name the module a.b: try it first.
            for imported in [f"{base}.{n}" for n in names or ()] or [base]:
                target = imported
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.setdefault(target, line)
        graph[name] = edges
    return graph


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
