"""A replica added to a group runs the group's code, not what is on disk now; a
group swap, which restarts each replica on new code, counts no restart.

Only a swap deploys new code to a replicated cell: it checks the new version
on one replica at a time, with catch-up, probation and rollback. A grow
(``cellmesh replicas X 5``) built its new replicas from the code on disk, so
an edited file ran on them beside the old code on the others, past all of
those checks (an audit of concurrent operator actions found it).
"""

from __future__ import annotations

import pytest
import trio
from test_replicas_root import GROUP, group_toml, healthy, note, running, until

from cellmesh.actors._cells import CellInstance, CellSlot
from cellmesh.actors.control import ChangeReplicas, SwapCell
from cellmesh.actors.root import Root
from cellmesh.cli._client import control_call


async def test_a_grow_runs_the_groups_code_and_a_swap_then_deploys_the_edit() -> None:
    async with running(group_toml()) as root:
        await healthy(root)

        def digests() -> set[str]:
            return {root.slots[f"{GROUP}/{i}"].dna_digest
                    for i in root._replicas.groups[GROUP].members}

        (before,) = digests()
        code = root.manifest.path.parent / "replicacells.py"
        code.write_text(code.read_text() + "\n# edited after the group started\n")
        await control_call(root.paths, ChangeReplicas(name=GROUP, count=5))
        await healthy(root, 5)
        assert digests() == {before}  # all five run the code the group ran
        assert await note(root, "after the grow") > 0
        report = await control_call(root.paths, SwapCell(name=GROUP, timeout=60, grace=0.2))
        assert report.outcome == "swapped", report
        await until(root, lambda: len(digests()) == 1 and digests() != {before})
        assert await note(root, "after the swap") > 0


async def test_a_group_swap_never_counts_a_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    """A group swap restarts each replica on the new code; that is not a restart of the
    replica. Its count went up by one for the start and back when the step ended, so a
    `status` in between showed it (an audit's poller saw 2 -> 1)."""
    seen: list[tuple[str, int]] = []
    start = Root._start_instance

    async def recording(self: Root, slot: CellSlot, nursery: trio.Nursery) -> CellInstance:
        instance = await start(self, slot, nursery)
        seen.append((slot.name, slot.restarts))
        return instance

    monkeypatch.setattr(Root, "_start_instance", recording)
    async with running(group_toml()) as root:
        await healthy(root)
        code = root.manifest.path.parent / "replicacells.py"
        code.write_text(code.read_text() + "\n# version 2\n")
        seen.clear()
        report = await control_call(root.paths, SwapCell(name=GROUP, timeout=60, grace=0.2))
        assert report.outcome == "swapped", report
        assert sorted(name for name, _ in seen) == [f"{GROUP}/{i}" for i in range(3)]
        assert all(count == 0 for _, count in seen), seen
        assert all(root.slots[f"{GROUP}/{i}"].restarts == 0 for i in range(3))
