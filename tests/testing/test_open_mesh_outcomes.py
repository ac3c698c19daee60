"""What comes out of an ``open_mesh`` block (docs/testing.md), as a user's test sees it.

* The block's own outcomes come out as they are: pytest's ``Failed``,
  ``Skipped`` and ``XFailed`` are ``BaseException`` subclasses, and they
  came out inside a ``BaseExceptionGroup`` with a note blaming the mesh (so
  ``pytest.skip`` in the block did not skip the test). A cancellation of a
  scope around the block and a ``KeyboardInterrupt`` still go through Trio.
* A mesh that does not start raises ``CellsCannotStart``, whatever failed: a
  cell's code that does not import, and a cell whose ``on_start`` raises
  (that came out as ``ExceptionGroup[SupervisorEscalation]``).
* A protein with an unsupported field type is refused when its module is
  imported, so the root's import check finds it in an on-demand cell that
  never uses it (it passed, and the cell failed at its first connection).

Real roots and cell processes (host sandbox) on private homes under /tmp.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio

from cellmesh.actors.errors import CellsCannotStart, RootRequestError, SupervisorEscalation
from cellmesh.actors.manifest import ManifestError
from cellmesh.errors import ConfigError
from cellmesh.testing import open_mesh

CELLS = '''\
import cellmesh


class Fine(cellmesh.Cell):
    pass


class Bad(cellmesh.Cell):
    async def on_start(self) -> None:
        raise ValueError("bad config value")
'''

#: A module whose import fails: the root's import check refuses it before any cell starts.
BROKEN = "import cellmesh\nimport no_such_module_anywhere  # noqa\n"

#: A protein no cell ever sends, with a field type proteins do not support.
UNUSED_BAD_PROTEIN = '''\
import datetime

import cellmesh


@cellmesh.protein("t.outcomes.When")
class When:
    at: datetime.datetime


class Lazy(cellmesh.Cell):
    pass
'''

FINE = '[cells.fine]\ndna = "cells.py"\nentry = "cells:Fine"\n'
NOTE = "open_mesh removed its private home"


@pytest.fixture
def home() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cmo-", dir="/tmp"))
    (path / "cells.py").write_text(CELLS)
    (path / "broken.py").write_text(BROKEN)
    (path / "lazy.py").write_text(UNUSED_BAD_PROTEIN)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def manifest(home: Path, toml: str) -> Path:
    path = home / "cellmesh.toml"
    path.write_text(toml)
    return path


def notes(exc: BaseException) -> str:
    return "\n".join(getattr(exc, "__notes__", []))


def did_not_raise() -> None:
    with pytest.raises(ValueError):
        pass


class OwnBaseException(BaseException):
    """A library's own BaseException subclass (not a cancellation, not an exit)."""


def raise_own() -> None:
    raise OwnBaseException("own")


@pytest.mark.parametrize(
    ("outcome", "kind", "text"),
    [
        (lambda: pytest.fail("plain failure"), pytest.fail.Exception, "plain failure"),
        (did_not_raise, pytest.fail.Exception, "DID NOT RAISE"),
        (lambda: pytest.skip("no bwrap here"), pytest.skip.Exception, "no bwrap here"),
        (lambda: pytest.xfail("known bug"), pytest.xfail.Exception, "known bug"),
        (raise_own, OwnBaseException, "own"),
    ],
    ids=["fail", "raises-did-not-raise", "skip", "xfail", "own-base-exception"],
)
async def test_the_blocks_own_base_exceptions_come_out_as_they_are(
    home: Path, outcome: Callable[[], None], kind: type[BaseException], text: str
) -> None:
    path = manifest(home, FINE)
    ran_after: list[str] = []
    with pytest.raises(BaseException) as info:
        async with open_mesh(path):
            outcome()
            ran_after.append("never")
    assert type(info.value) is kind, repr(info.value)  # not inside an exception group
    assert text in str(info.value)
    assert NOTE not in notes(info.value)  # nothing to blame on the mesh
    assert ran_after == []


async def test_the_blocks_own_groups_and_root_errors_get_no_note(home: Path) -> None:
    """Only the root's errors point to its logs: the block's own exception group or
    RootError is no reason to say where they went."""
    path = manifest(home, FINE)
    own = ExceptionGroup("the test's own", [KeyError("a"), KeyError("b")])
    with pytest.raises(ExceptionGroup) as group:
        async with open_mesh(path):
            raise own
    assert group.value is own and NOTE not in notes(own)
    with pytest.raises(RootRequestError) as refused:
        async with open_mesh(path):
            raise RootRequestError("fine", "the test's own")
    assert NOTE not in notes(refused.value)


async def test_a_cancelled_scope_around_the_block_still_cancels_it(home: Path) -> None:
    path = manifest(home, FINE)
    with trio.CancelScope() as scope:
        async with open_mesh(path) as root:
            instance = root.slots["fine"].instance
            assert instance is not None and instance.pid is not None
            pid = instance.pid
            scope.cancel()
            await trio.sleep_forever()
    assert scope.cancelled_caught
    with pytest.raises(ProcessLookupError):  # leaving the block still stopped the cells
        os.kill(pid, 0)


async def test_a_keyboard_interrupt_in_the_block_is_not_taken_for_its_own(home: Path) -> None:
    """Ctrl-C keeps Trio's semantics (it cancels the mesh; no graceful stop, no note)."""
    path = manifest(home, FINE)
    with pytest.raises(BaseException) as info:
        async with open_mesh(path):
            raise KeyboardInterrupt
    exc = info.value
    assert isinstance(exc, KeyboardInterrupt) or (
        isinstance(exc, BaseExceptionGroup) and exc.subgroup(KeyboardInterrupt) is not None
    ), repr(exc)
    assert NOTE not in notes(exc)


async def test_an_on_start_failure_is_cells_cannot_start_naming_the_cell(home: Path) -> None:
    path = manifest(home, FINE + '\n[cells.bad]\ndna = "cells.py"\nentry = "cells:Bad"\n')
    with pytest.raises(CellsCannotStart, match="bad config value") as info:
        async with open_mesh(path):
            raise AssertionError("the mesh must not start")
    err = info.value
    assert err.cells == ["bad"]
    (problem,) = err.problems
    assert problem.startswith("cells.bad: exited before it was ready: exit code 1: "
                              "ValueError in on_start: bad config value"), problem
    assert isinstance(err.__cause__, SupervisorEscalation)
    assert err.__cause__.child_id == "bad"
    assert NOTE in notes(err) and "log=print" in notes(err)


async def test_a_cell_failing_under_a_nested_supervisor_is_named_itself(home: Path) -> None:
    toml = (FINE + '\n[cells.bad]\ndna = "cells.py"\nentry = "cells:Bad"\n'
            + '\n[supervisors.db]\nchildren = ["bad"]\n')
    with pytest.raises(CellsCannotStart) as info:
        async with open_mesh(manifest(home, toml)):
            raise AssertionError("the mesh must not start")
    assert info.value.cells == ["bad"]  # the cell, not its supervisor "db"
    assert info.value.problems[0].startswith("cells.bad: exited before it was ready")
    cause = info.value.__cause__
    assert isinstance(cause, SupervisorEscalation) and cause.child_id == "db"


async def test_an_import_failure_is_cells_cannot_start_too(home: Path) -> None:
    toml = FINE + '\n[cells.broken]\ndna = "broken.py"\nentry = "broken:Cell"\n'
    with pytest.raises(CellsCannotStart) as info:
        async with open_mesh(manifest(home, toml)):
            raise AssertionError("the mesh must not start")
    assert info.value.cells == ["broken"]
    assert info.value.problems == [
        "cells.broken.entry: importing the cell's code raised ModuleNotFoundError: "
        "No module named 'no_such_module_anywhere'"
    ]
    assert NOTE in notes(info.value)


async def test_an_unused_bad_protein_of_an_on_demand_cell_fails_the_start(home: Path) -> None:
    """The import check (that of `cellmesh up` too) finds it: @protein refuses the type."""
    toml = FINE + '\n[cells.lazy]\ndna = "lazy.py"\nentry = "lazy:Lazy"\nactivation = "on_demand"\n'
    with pytest.raises(CellsCannotStart) as info:
        async with open_mesh(manifest(home, toml)):
            raise AssertionError("the mesh must not start")
    assert info.value.cells == ["lazy"]
    (problem,) = info.value.problems
    assert problem.startswith("cells.lazy.entry: importing the cell's code raised TypeError: ")
    assert "When.at: field type datetime.datetime is not supported by proteins" in problem


@pytest.mark.parametrize(
    ("toml", "kind", "text"),
    [
        (FINE + 'network = ["127.0.0.1:5432"]\n', ConfigError,
         "cells.fine.network: lists destinations, which only the bwrap sandbox can hold"),
        ('[cells.fine]\ndna = "missing.py"\nentry = "cells:Fine"\n', ManifestError,
         "cells.fine.dna: "),
    ],
    ids=["network-under-host", "dna-missing"],
)
async def test_a_configuration_the_root_refuses_comes_out_as_it_is(
    home: Path, toml: str, kind: type[ConfigError], text: str
) -> None:
    """Not in Trio's exception group (it came out wrapped twice): ``pytest.raises(ConfigError)``
    works, and the error names the manifest key."""
    with pytest.raises(kind) as info:
        async with open_mesh(manifest(home, toml)):
            raise AssertionError("the mesh must not start")
    assert type(info.value) is kind
    assert text in str(info.value)
