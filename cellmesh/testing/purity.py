"""Read a module's imports with ``ast``: how tests prove a pure core does no I/O."""

from __future__ import annotations

import ast


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
