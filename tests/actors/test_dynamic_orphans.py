"""A dynamic child still starting when its parent exits does not outlive it.

A parent's exit stops its children (docs/root.md, "Dynamic children"); a child
that was still starting then was not among them: it ran on, an orphan counted
against the quota of the parent's next incarnation (a scale audit found it).
Real root, real cell processes; the child's start is held by a gate file.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from rootcells import Spawn
from test_root import cell, crash, running_root, serving_pid, state, until

from cellmesh import CellmeshError, Synapse

pytestmark = pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs /proc")


async def _poll(predicate: Callable[[], bool]) -> None:
    """Wait until ``predicate()`` holds (a new slot fires no slot's change event)."""
    with trio.fail_after(60):
        while not predicate():
            await trio.sleep(0.02)


async def test_a_child_still_starting_when_its_parent_exits_is_stopped() -> None:
    gate = Path(tempfile.mkdtemp(prefix="gate-", dir="/tmp")) / "open"
    toml = (
        cell("watcher", "Watcher", max_children="1", templates='["worker"]')
        + '[templates.worker]\ndna = "rootcells.py"\nentry = "rootcells:GatedStart"\n'
        + f'env = {{ GATE = "{gate}" }}\n'
    )
    async with running_root(toml) as (root, paths):
        first = serving_pid(root, "watcher")

        async def ask() -> None:
            # The parent dies before it is answered: its caller sees that, however.
            async with Synapse.grow("watcher", socket_dir=paths.socket_dir) as syn:
                with contextlib.suppress(CellmeshError):
                    await syn.fire(Spawn(suffix="a"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask)
            await _poll(lambda: "watcher.a" in root.slots
                        and root.slots["watcher.a"].instance is not None)
            crash(root, "watcher")  # while watcher.a waits at its gate
            await until(root, "watcher", lambda: state(root, "watcher") == "running"
                        and serving_pid(root, "watcher") not in (None, first))
            gate.touch()  # watcher.a's start completes now: after its parent's exit
        # Stopped (it counts against the quota until it is gone, then no more).
        await _poll(lambda: "watcher.a" not in root.slots
                    and root._dynamic.in_use(root.slots["watcher"]) == 0)
        # The parent's new incarnation has its whole quota (max_children = 1).
        async with Synapse.grow("watcher", socket_dir=paths.socket_dir) as syn:
            child = await syn.fire(Spawn(suffix="b"))
        assert child.name == "watcher.b"
        assert "watcher.a" not in root.slots
        assert root.slots["watcher"].children == {"watcher.b"}
    gate.unlink()
    gate.parent.rmdir()
