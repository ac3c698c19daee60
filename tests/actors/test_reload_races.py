"""Reloads racing other operator requests: one reload at a time, and a step that is
refused keeps the root's manifest true to what runs.

A reload whose swap of a cell was refused (a swap of that cell already ran)
stopped there: the cells after it were never changed, the error did not say
the reload stopped part-way, and the root's manifest already held the new
declarations, so the next reload found "nothing changed". Two reloads at
once met on the new cell's standby ("in use by a live membrane"). Real
roots and cell processes (an audit of concurrent operator actions found both).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import rootcells
import trio
from swapcells import source
from test_reload import reload

from cellmesh import Synapse
from cellmesh.actors.control import SwapCell, SwapReport
from cellmesh.actors.root import Root
from cellmesh.cli._client import RootRefused, ask_root
from cellmesh.testing.mesh import open_root

BASE = """
[cells.counter]
dna = "counter.py"

[cells.echo]
dna = "rootcells.py"
entry = "rootcells:Echoer"
"""


@asynccontextmanager
async def _mesh() -> AsyncIterator[tuple[Root, Path]]:
    home = Path(tempfile.mkdtemp(prefix="rr-", dir="/tmp"))
    try:
        (home / "counter.py").write_text(source("a"))
        shutil.copy(Path(rootcells.__file__), home / "rootcells.py")
        async with open_root(home, BASE, sandbox="host") as root:
            yield root, home
    finally:
        shutil.rmtree(home, ignore_errors=True)


async def _poll(predicate: object) -> None:
    with trio.fail_after(60):
        while not predicate():  # type: ignore[operator]
            await trio.sleep(0.01)


async def test_a_reload_whose_swap_is_refused_goes_on_and_keeps_the_old_declaration() -> None:
    async with _mesh() as (root, home):
        (home / "counter.py").write_text(source("b", "slow"))  # on_start takes a second
        swapped: list[SwapReport] = []

        async def swap() -> None:
            async with Synapse.grow("mitosis", socket_path=root.paths.umbilical) as syn:
                swapped.append(await ask_root(syn, SwapCell(name="counter", timeout=30,
                                                            grace=2.0)))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(swap)
            await _poll(lambda: root.slots["counter"].swap_phase != "")
            (home / "cellmesh.toml").write_text(
                BASE.replace('dna = "counter.py"', 'dna = "counter.py"\nenv = { X = "1" }')
                .replace('entry = "rootcells:Echoer"', 'entry = "rootcells:Echoer"\n'
                         'env = { Y = "2" }'))
            report = await reload(root)
        assert [s.outcome for s in swapped] == ["swapped"]
        assert not report.ok
        assert report.lines[0].startswith("could not swap counter: ")
        assert "already in progress" in report.lines[0], report.lines
        assert report.lines[1:] == ["swapped echo"], report.lines  # the rest went on
        assert dict(root.manifest.cells["echo"].env) == {"Y": "2"}
        assert dict(root.manifest.cells["counter"].env) == {}  # what runs
        assert (await reload(root, dry_run=True)).lines == ["would swap counter (env changed)"]
        assert (await reload(root)).lines == ["swapped counter"]


SLOW = '''
import time

import cellmesh

time.sleep(1.5)  # a heavy import: the reload that starts it takes a while


class Slow(cellmesh.Cell):
    pass
'''


async def test_a_second_reload_while_one_runs_is_refused_naming_it() -> None:
    async with _mesh() as (root, home):
        (home / "slowcell.py").write_text(SLOW)
        (home / "cellmesh.toml").write_text(
            BASE + '\n[cells.slow]\ndna = "slowcell.py"\nentry = "slowcell:Slow"\n')
        first: list[object] = []

        async def reload_first() -> None:
            first.append(await reload(root))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reload_first)
            await _poll(lambda: "slow.preflight" in root.slots)
            with pytest.raises(RootRefused, match=r"another reload is in progress \(began "
                               r"[0-9.]+ s ago\); wait for it to end"):
                await reload(root)
            assert (await reload(root, dry_run=True)).ok  # a dry run needs no turn
        (report,) = first
        assert report.lines == ["started slow (new in the manifest)"]  # type: ignore[attr-defined]
        assert (await reload(root)).lines == ["nothing changed"]


async def test_a_reload_whose_replicas_change_is_refused_keeps_the_count_in_force() -> None:
    """A reload to ``replicas = 7`` while a membership change runs is refused that step:
    the root's manifest keeps 3 (it said 5: the next reload found nothing to do)."""
    from test_replicas_root import GROUP, _Unanswered, group_toml, healthy, running

    from cellmesh.actors.control import ChangeReplicas
    from cellmesh.cli._client import control_call

    async with running(group_toml()) as root:
        await healthy(root)
        admin = _Unanswered()  # the leader never answers: the change below stays in progress
        root._replicas.changes.admin = admin
        async with trio.open_nursery() as nursery:
            nursery.start_soon(control_call, root.paths, ChangeReplicas(name=GROUP, count=5))
            await admin.asked.wait()
            root.manifest.path.write_text(group_toml(7))
            report = await reload(root)
            nursery.cancel_scope.cancel()
        assert not report.ok
        assert report.lines[0].startswith(f"could not change {GROUP} to 7 replicas: "), report
        assert "membership change is in progress" in report.lines[0], report
        assert root.manifest.cells[GROUP].replicas == 3  # in force: the next reload retries
        assert (await reload(root, dry_run=True)).lines != ["nothing would change"]
