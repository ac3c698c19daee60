"""A root daemon served inside the caller's Trio run, for tests and benchmarks.

:func:`open_root` writes a manifest into a home directory, starts
:func:`cellmesh.actors.root.serve_root` on it with the given sandbox and
yields the running :class:`~cellmesh.actors.root.Root`; :func:`open_mesh`
serves a manifest file where it is, on a fresh private home (the fixture
for a user's own mesh tests, docs/testing.md). The block ends early
(by cancellation) when the root ends on its own: an escalation then
propagates, a clean stop (a ``StopMesh``) raises :class:`MeshStopped`. What
the block itself raises comes out as it is (not in an exception group): an
``Exception`` and any other ``BaseException`` of its own, such as pytest's
outcomes (``pytest.fail``, ``pytest.skip``, a ``pytest.raises`` that saw
nothing); only a cancellation, ``KeyboardInterrupt``, ``SystemExit`` and
``GeneratorExit`` go through Trio's nursery as Trio hands them on. A mesh
that does not start raises :class:`~cellmesh.actors.errors.CellsCannotStart`
out of :func:`open_mesh`, whatever the cell's failure (its code does not
import, its ``on_start`` or constructor raised, it never became ready),
and a configuration the root refuses at its start (a DNA file it cannot
read, a ``network`` the sandbox cannot enforce) raises that
:class:`~cellmesh.errors.ConfigError` as it is; :func:`open_root` hands
the root's errors on as :func:`serve_root` raises them, in Trio's exception
group. Leaving the block stops the root and waits
until every cell process is gone.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

import trio

from ..actors.errors import (
    CellsCannotStart,
    ChildStartFailed,
    RootError,
    SupervisorEscalation,
)
from ..actors.manifest import Manifest, load_manifest, parse_manifest
from ..actors.policy import FAILED_TO_START
from ..actors.root import Root, serve_root
from ..config import Paths
from ..errors import ConfigError


class MeshStopped(RootError):
    """The root of an :func:`open_mesh` / :func:`open_root` block stopped on its own,
    cleanly, while the block ran: the block was cancelled and did not finish (so a test
    cannot pass without running its assertions). A test that stops the mesh itself
    expects it: ``with pytest.raises(MeshStopped)``."""


#: What a block may raise that is not an outcome of its own, to hand on through
#: the nursery as Trio does: a cancellation (of a scope around the block, or the
#: mesh's own when its root ended first) and the interpreter's own ends.
_PASSED_THROUGH: Final = (trio.Cancelled, KeyboardInterrupt, SystemExit, GeneratorExit)


def _blocks_own(exc: BaseException) -> bool:
    """True when ``exc``, raised by the block, is the block's own outcome (an
    ``Exception`` or another ``BaseException``, pytest's ``Failed`` and ``Skipped``
    among them), to come out of the block as it is; False for what
    :data:`_PASSED_THROUGH` names, alone or anywhere in an exception group."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(_PASSED_THROUGH) is None
    return not isinstance(exc, _PASSED_THROUGH)


def _of_the_root(exc: BaseException) -> bool:
    """True when ``exc`` is (or holds) an error of the root: its messages may point
    to ``cellmesh logs X``, in a home that :func:`open_mesh` removes."""
    kinds = (RootError, SupervisorEscalation)
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(kinds) is not None
    return isinstance(exc, kinds)


def _refused_config(exc: BaseException) -> ConfigError | None:
    """The one :class:`ConfigError` that stopped the root's start, if that is all ``exc`` holds
    (beside cancellations): a manifest the root refuses, not a cell that failed."""
    leaves = [leaf for leaf in _leaves(exc) if not isinstance(leaf, trio.Cancelled)]
    if len(leaves) == 1 and isinstance(leaves[0], ConfigError):
        return leaves[0]
    return None


def _leaves(exc: BaseException) -> list[BaseException]:
    """``exc`` itself, or the exceptions anywhere in it when it is an exception group."""
    if not isinstance(exc, BaseExceptionGroup):
        return [exc]
    return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]


def _failed_child(escalation: SupervisorEscalation, manifest: Manifest) -> tuple[str, str]:
    """The cell (or supervisor) whose start failed, and why, behind ``escalation``.

    A nested supervisor that escalated in turn is a child that failed to start
    with the inner escalation's text as its detail: follow it down to the
    cell that failed (each prefix is the text :class:`SupervisorEscalation`
    itself writes, tried for each name of the manifest).
    """
    child, detail = escalation.child_id, escalation.detail
    names = [*manifest.supervisors, *manifest.cells]
    while True:
        for name in names:
            prefix = f"{SupervisorEscalation(FAILED_TO_START, child_id=name)}: "
            if detail.startswith(prefix):
                child, detail = name, detail[len(prefix):]
                break
        else:
            return child, ChildStartFailed.reason_of(child, detail)


def _cannot_start(error: BaseException, manifest: Manifest) -> CellsCannotStart | None:
    """What :func:`open_mesh` raises for ``error``, the root's failure to start the
    mesh: its :class:`CellsCannotStart` (a cell's code does not import), or one made
    from the top supervisor's ``failed_to_start_child`` escalation (its cause) when
    a cell's process failed to start (``on_start`` or the constructor raised, it
    exited or timed out before it was ready). None for any other error."""
    leaves = _leaves(error)
    for leaf in leaves:
        if isinstance(leaf, CellsCannotStart):
            return leaf
    for leaf in leaves:
        if isinstance(leaf, SupervisorEscalation) and leaf.reason == FAILED_TO_START:
            child, reason = _failed_child(leaf, manifest)
            section = "cells" if child in manifest.cells else "supervisors"
            cannot = CellsCannotStart([f"{section}.{child}: {reason}"], [child])
            cannot.__cause__ = leaf
            return cannot
    return None


def mesh_env(home: Path, sandbox: str) -> dict[str, str]:
    """The environment of a root on ``home`` (``CELL_HOME``) with ``sandbox``."""
    return {
        "CELL_HOME": str(home),
        "CELL_SANDBOX": sandbox,
        "PATH": os.environ.get("PATH") or "/usr/bin:/bin",
    }


@asynccontextmanager
async def open_root(
    home: Path,
    toml: str,
    *,
    sandbox: str = "host",
    log: Callable[[str], None] | None = None,
    stop_timeout: float = 5.0,
    metrics: tuple[str, int] | None = None,
) -> AsyncIterator[Root]:
    """Serve the manifest ``toml`` (written to ``home/cellmesh.toml``) for the block.

    DNA paths in ``toml`` are relative to ``home``. Keep ``home`` short (e.g.
    under /tmp): Unix socket paths are limited to 107 bytes. ``metrics``
    (host, port) serves the Prometheus endpoint too (``root.metrics_address``
    is where; port 0 picks a free one).
    """
    path = home / "cellmesh.toml"
    path.write_text(toml)
    async with _serve(home, parse_manifest(toml, path=path), sandbox=sandbox, log=log,
                      stop_timeout=stop_timeout, metrics=metrics) as root:
        yield root


@asynccontextmanager
async def open_mesh(
    manifest: str | os.PathLike[str],
    *,
    sandbox: str = "host",
    log: Callable[[str], None] | None = None,
    stop_timeout: float = 5.0,
    metrics: tuple[str, int] | None = None,
) -> AsyncIterator[Root]:
    """Serve the manifest file ``manifest`` as it is, on a fresh private home, for the block.

    The manifest and its DNA stay where they are (DNA paths relative to the
    manifest's directory, as for ``cellmesh up``); sockets, the DNA cache and
    logs go to a new directory under /tmp (short, for socket paths), removed
    afterwards. This is the fixture of a user's own mesh tests (docs/testing.md).

    A mesh that does not start raises
    :class:`~cellmesh.actors.errors.CellsCannotStart` (not in an exception
    group): ``cells`` names the cells that failed, ``problems`` says why; when
    a cell's process failed to start, the top supervisor's
    :class:`~cellmesh.actors.errors.SupervisorEscalation` is its ``__cause__``.
    A configuration the root refuses at its start raises its
    :class:`~cellmesh.errors.ConfigError` (a ``ManifestError`` for a manifest
    key, naming it), also not in a group. What the block raises comes out as it is (the module doc).
    """
    path = Path(manifest).resolve()
    parsed = load_manifest(path)
    home = Path(tempfile.mkdtemp(prefix="cm-", dir="/tmp"))
    started = False
    own: BaseException | None = None  # what the block itself raised
    try:
        async with _serve(home, parsed, sandbox=sandbox, log=log, stop_timeout=stop_timeout,
                          metrics=metrics) as root:
            started = True
            try:
                yield root
            except BaseException as exc:
                own = exc
                raise
    except BaseException as exc:
        if exc is own or isinstance(exc, MeshStopped):
            raise
        refused = None if started else _refused_config(exc)
        if refused is not None:  # as it is, not in the nursery's group
            raise refused from refused.__cause__
        if not _of_the_root(exc):
            raise
        cannot = None if started else _cannot_start(exc, parsed)
        error = exc if cannot is None else cannot
        # The root's own messages say "see `cellmesh logs X`": not once this home is gone.
        error.add_note(f"open_mesh removed its private home {home} with the cells' logs; "
                       "pass log=print to see the root's log lines as they are written")
        if cannot is None:
            raise
        # Not in the nursery's group: the root's own CellsCannotStart as it is (from
        # None), or the one made from an escalation, from that escalation.
        raise cannot from cannot.__cause__
    finally:
        shutil.rmtree(home, ignore_errors=True)


@asynccontextmanager
async def _serve(
    home: Path,
    manifest: Manifest,
    *,
    sandbox: str,
    log: Callable[[str], None] | None,
    stop_timeout: float,
    metrics: tuple[str, int] | None,
) -> AsyncIterator[Root]:
    env = mesh_env(home, sandbox)
    paths = Paths.from_env(env)
    leaving = False
    ended_first = False
    failed: BaseException | None = None
    async with trio.open_nursery() as nursery:

        async def run(task_status: trio.TaskStatus[Root]) -> None:
            nonlocal ended_first
            try:
                await serve_root(
                    manifest, paths=paths, env=env, log=log or (lambda _: None),
                    metrics=metrics, task_status=task_status,
                )
            finally:
                ended_first = not leaving
                nursery.cancel_scope.cancel()  # the root ended: so does the block

        root: Root = await nursery.start(run)
        try:
            yield root
        except BaseException as exc:
            if not _blocks_own(exc):
                raise  # a cancellation or the interpreter's end: Trio's to hand on
            failed = exc  # the block's own outcome: raised as it is, not in a group
        finally:
            leaving = True
            root.request_stop(stop_timeout)
    if failed is not None:
        raise failed
    if ended_first:  # it stopped cleanly (an error would have propagated above)
        raise MeshStopped(
            "the mesh stopped while the block ran (a StopMesh, `cellmesh down`, a signal): "
            "the rest of the block did not run"
        )


__all__ = ["MeshStopped", "mesh_env", "open_mesh", "open_root"]
