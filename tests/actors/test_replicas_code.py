"""A replica added to a group runs the group's code, not what is on disk now.

Only a swap deploys new code to a replicated cell: it checks the new version
on one replica at a time, with catch-up, probation and rollback. A grow
(``cellmesh replicas X 5``) built its new replicas from the code on disk, so
an edited file ran on them beside the old code on the others, past all of
those checks (an audit of concurrent operator actions found it).
"""

from __future__ import annotations

from test_replicas_root import GROUP, group_toml, healthy, note, running, until

from cellmesh.actors.control import ChangeReplicas, SwapCell
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
