"""The standby side of a cell process: the go pipe, preloading code, switching code.

Theory of operation
-------------------
The root keeps one process per cell waiting (docs/root.md, "Standby
processes"): it has started the interpreter and imported the runtime. The
root talks to it over the inherited pipe ``CELL_GO_FD``, one line per
command (each written whole: a line is shorter than ``PIPE_BUF``):

``i DIGEST``
    preload the code of DNA ``DIGEST`` (``$CELL_DNA_DIR/DIGEST``: the root
    binds the cell's DNA directory, holding an entry per version, into the
    sandbox) -- its module and everything it imports;
``g TOKEN``
    serve the preloaded code; ``TOKEN`` names this process to the root;
``s TOKEN DIGEST``
    take over from the serving process in a hot swap, running ``DIGEST``.

End of file means "not needed": exit quietly. When a swap names other code
than the preloaded one, the process switches: it forgets every module
imported from the old entry (and their proteins) and imports the new one,
keeping what both share (trio, cellmesh, third-party libraries): that is
what makes a swap as quick as a restart. If the old code left something a
process cannot forget (a thread, an extension module of its own), the
process re-executes itself instead, with the command in ``CELL_GO``: a
fresh interpreter in the same sandbox.

Importing the old code may also have changed the process itself. A
:class:`Clean` record taken before the preload says what it was: the
environment, the recursion limit, the root logger's handlers, level and
filters, and the warning filters are put back before the new code is
imported (so its ``logging.basicConfig`` is not silently a no-op); an
attribute the old code set, rebound or deleted in a module that was loaded
before it (a monkeypatch of ``json``, of ``sys.excepthook``) cannot be told
from the module's own state, so the process re-executes instead.

A bare ``g`` (no token, no preload) is accepted too: the runtime then uses
``CELL_DNA_DIR`` as the entry itself (a cell run by hand).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import threading
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, Final

import attrs

from ..wire.proteins import PROTEINS

#: The longest command line the root writes (a command, a token, a digest).
MAX_LINE: Final = 256
#: Length of a process's token (hex digits).
TOKEN_LEN: Final = 32


@attrs.frozen(kw_only=True)
class Go:
    """What the root said: start (or take over: ``swap``), the token, the code's digest."""

    swap: bool = False
    token: str = ""
    digest: str = ""

    def environ(self, env: Mapping[str, str]) -> dict[str, str]:
        """``env`` with ``CELL_DNA_DIR`` pointing at this code's entry."""
        return with_digest(env, self.digest)


def with_digest(env: Mapping[str, str], digest: str) -> dict[str, str]:
    """``env`` whose ``CELL_DNA_DIR`` is the entry ``digest`` inside the cell's DNA directory."""
    out = dict(env)
    if digest and out.get("CELL_DNA_DIR"):
        out["CELL_DNA_DIR"] = str(Path(out["CELL_DNA_DIR"]) / digest)
    return out


def parse(line: str) -> Go | None:
    """One ``g``/``s`` command (None when it is neither; tokens must be hex)."""
    parts = line.split()
    if parts == ["g"]:
        return Go()
    if len(parts) == 2 and parts[0] == "g" and _hex(parts[1]):
        return Go(token=parts[1])
    if len(parts) == 3 and parts[0] == "s" and _hex(parts[1]) and _hex(parts[2]):
        return Go(swap=True, token=parts[1], digest=parts[2])
    return None


def _hex(text: str) -> bool:
    return 0 < len(text) <= 128 and all(c in "0123456789abcdef" for c in text)


class _Lines:
    """Lines from the go pipe (blocking reads; the root writes each line whole)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""

    def next(self) -> str | None:
        while b"\n" not in self.buffer and self.buffer != b"g":  # (a bare g: a cell by hand)
            try:
                chunk = os.read(self.fd, MAX_LINE)
            except InterruptedError:
                continue
            if not chunk:
                rest, self.buffer = self.buffer, b""
                return rest.decode("ascii", "replace") if rest else None
            self.buffer += chunk
            if len(self.buffer) > 4 * MAX_LINE:
                return None
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode("ascii", "replace")


@attrs.frozen(eq=False)
class Clean:
    """The process-wide state before a preload (see the module doc)."""

    environ: dict[str, str]
    recursion_limit: int
    root_handlers: tuple[logging.Handler, ...]
    root_level: int
    root_filters: tuple[Any, ...]
    warning_filters: tuple[Any, ...]
    modules: dict[str, tuple[ModuleType, dict[str, object]]]

    @classmethod
    def take(cls) -> Clean:
        """Record the state now (a few milliseconds: every loaded module's globals)."""
        root = logging.getLogger()
        return cls(
            environ=dict(os.environ),
            recursion_limit=sys.getrecursionlimit(),
            root_handlers=tuple(root.handlers),
            root_level=root.level,
            root_filters=tuple(root.filters),
            warning_filters=tuple(warnings.filters),
            modules={
                name: (module, dict(vars(module)))
                for name, module in list(sys.modules.items())
                if isinstance(module, ModuleType) and name != "__main__"
            },
        )

    def restore(self) -> str | None:
        """Put back what can be put back; what cannot (None: nothing is left changed)."""
        os.environ.clear()
        os.environ.update(self.environ)
        sys.setrecursionlimit(self.recursion_limit)
        root = logging.getLogger()
        root.handlers[:] = self.root_handlers
        root.setLevel(self.root_level)
        root.filters[:] = self.root_filters
        filters: list[Any] = warnings.filters  # type: ignore[assignment]
        filters[:] = self.warning_filters
        getattr(warnings, "_filters_mutated", lambda: None)()  # (drops its caches)
        for name, (module, before) in self.modules.items():
            if sys.modules.get(name) is not module:
                return f"module {name} was replaced"
            now = vars(module)
            for key, value in now.items():
                old = before.get(key, _ABSENT)
                if old is value:
                    continue
                if old is _ABSENT and (
                    isinstance(value, ModuleType) or (key.startswith("__") and key.endswith("__"))
                ):
                    continue  # a submodule imported since, a __warningregistry__
                return f"{name}.{key} was {'set' if old is _ABSENT else 'rebound'}"
            if any(key not in now for key in before):
                return f"an attribute of {name} was deleted"
        return None


_ABSENT: Final = object()


def wait_for_go(env: Mapping[str, str], preload: Callable[[Mapping[str, str]], None]) -> Go | None:
    """Standby: read the root's commands (module doc) until it says go; None at end of file.

    ``preload(env)`` imports the cell's code for ``env`` (errors are left for
    the start to report). Without ``CELL_GO_FD`` it returns at once: the
    command in ``CELL_GO`` (a re-executed standby), or a plain start.
    """
    command = env.get("CELL_GO", "")
    if command:
        return parse(command) or Go()
    raw = env.get("CELL_GO_FD", "")
    if not (raw.isascii() and raw.isdigit()):
        return Go()
    fd = int(raw)
    warmed = ""
    clean: Clean | None = None
    try:
        lines = _Lines(fd)
        while True:
            line = lines.next()
            if line is None:
                return None
            if line.startswith("i "):
                warmed = line[2:].strip() if _hex(line[2:].strip()) else ""
                clean = clean or Clean.take()
                preload(with_digest(env, warmed))
                continue
            go = parse(line)
            if go is None:
                return None  # not a command of ours: do not serve
            break
    except OSError:
        return Go()  # not an open fd: nothing to wait for
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    if not go.digest:
        return attrs.evolve(go, digest=warmed)
    if warmed and go.digest != warmed:
        old = with_digest(env, warmed).get("CELL_DNA_DIR", "")
        changed = clean.restore() if clean is not None else "no record of it"
        if not old or changed is not None or not forget_code(old):
            reexec(go, changed)
    return go


def forget_code(root: str) -> bool:
    """Forget every module imported from under ``root`` and the proteins they defined.

    Returns False (and forgets nothing) when that is not safe: a thread other
    than the main one runs, or a module there is not Python source/bytecode
    (an extension module cannot be unloaded).
    """
    if threading.active_count() > 1:
        return False
    real = os.path.realpath(root)

    def under(path: str) -> bool:
        resolved = os.path.realpath(path)
        return resolved == real or resolved.startswith(os.path.join(real, ""))

    doomed = []
    for name, module in list(sys.modules.items()):
        origin = getattr(module, "__file__", None)
        paths = list(getattr(module, "__path__", None) or ())
        if origin is not None and under(origin):
            if not origin.endswith((".py", ".pyc")):
                return False
            doomed.append(name)
        elif origin is None and paths and all(under(p) for p in paths):
            doomed.append(name)  # a namespace package of the old code
    for name in doomed:
        del sys.modules[name]
    PROTEINS.forget_modules(set(doomed))
    sys.path[:] = [p for p in sys.path if not under(p)]
    for key in [k for k in sys.path_importer_cache if under(k)]:
        del sys.path_importer_cache[key]
    importlib.invalidate_caches()
    return True


def reexec(go: Go, changed: str | None = None) -> None:
    """Start over as a fresh interpreter in this sandbox, the command in ``CELL_GO``."""
    why = (f"it changed the process ({changed})" if changed is not None
           else "a thread, or an extension module")
    print(f"cellmesh.actors.runtime: the old code cannot be unloaded here ({why}); "
          "starting the new code in a fresh interpreter", file=sys.stderr, flush=True)
    env = dict(os.environ)
    env.pop("CELL_GO_FD", None)
    env["CELL_GO"] = f"s {go.token} {go.digest}"
    os.execve(sys.executable, [sys.executable, "-m", "cellmesh.actors.runtime"], env)


__all__ = [
    "TOKEN_LEN", "Clean", "Go", "forget_code", "parse", "reexec", "wait_for_go", "with_digest",
]
