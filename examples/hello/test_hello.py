"""Tests of the hello mesh (written by `cellmesh init`), as a user writes them.

Run pytest on this directory (`python -m pytest hello` after `cellmesh init
hello`; `pip install pytest pytest-trio` first). Each test but the last starts
a real root and real cell processes. docs/testing.md walks through it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import pytest
import trio
from cells.protocol import Count, Greet
from cells.store import Store

import cellmesh
from cellmesh.actors.control import KillCell
from cellmesh.actors.root import Root
from cellmesh.actors.runtime import serve_cell
from cellmesh.testing import open_mesh

pytestmark = pytest.mark.trio
MANIFEST = Path(__file__).resolve().parent / "cellmesh.toml"


@pytest.fixture
async def mesh() -> AsyncIterator[Root]:
    """The whole mesh: a real root and real (sandboxed) cell processes, on a private home."""
    async with open_mesh(MANIFEST, sandbox="host") as root:
        yield root


async def test_a_greeting_counts_visits(mesh: Root) -> None:
    async with cellmesh.Synapse.grow("greeter", socket_dir=mesh.paths.socket_dir) as greeter:
        first = await greeter.fire(Greet("ada"))  # a Greeting, to mypy too
        second = await greeter.fire(Greet("ada"))
    assert (first.visits, second.visits) == (1, 2)
    assert second.text == "Hello, ada! You have visited 2 times."


async def test_the_store_counts_each_name(mesh: Root) -> None:
    async with cellmesh.Synapse.grow("store", socket_dir=mesh.paths.socket_dir) as store:
        counted = await store.fire_many([Count("a"), Count("b"), Count("a")])
    assert [c.visits for c in counted] == [1, 1, 2]


async def test_the_store_is_restarted_after_a_crash(mesh: Root) -> None:
    before = mesh.slots["store"].instance
    async with cellmesh.Synapse.grow("mitosis", socket_path=mesh.paths.umbilical) as root:
        await root.fire(KillCell(name="store"))
    slot = mesh.slots["store"]
    with trio.fail_after(30):  # wait for the root's own events, never for a fixed time
        while slot.instance is before or slot.instance is None or (
            slot.instance.state != "running"
        ):
            await slot.changed.wait()
    async with cellmesh.Synapse.grow("store", socket_dir=mesh.paths.socket_dir) as store:
        counted = await store.fire(Count("a"))
    assert counted.visits == 1  # in memory only: the restart started over
    assert [r.cell for r in mesh.restart_log] == ["store"]


async def test_the_store_alone(tmp_path: Path) -> None:
    """One cell in this test's Trio run, no root and no process (docs/testing.md)."""
    async with trio.open_nursery() as nursery:
        running = await nursery.start(
            partial(serve_cell, Store(), name="store", socket_dir=tmp_path)
        )
        async with cellmesh.Synapse.grow("store", socket_dir=tmp_path) as store:
            assert (await store.fire(Count("a"))).visits == 1
        running.stop()  # drain, on_stop, then serve_cell returns
