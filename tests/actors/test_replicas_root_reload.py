"""``cellmesh reload`` and replicated cells: only the ``replicas`` count changes live.

The pure difference (:func:`cellmesh.actors.reload.diff_manifests`) turns a
changed count into a membership change and refuses everything else it
cannot do to a running group, naming the key; a live root applies the
count one server at a time (``Root.change_replicas``).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import replicacells
from test_replicas_root import GROUP, group_toml, healthy, note

from cellmesh import Synapse
from cellmesh.actors.control import ReloadManifest, ReloadReport
from cellmesh.actors.manifest import parse_manifest
from cellmesh.actors.reload import diff_manifests
from cellmesh.cli._client import ask_root
from cellmesh.testing.mesh import open_root

PLAIN = '[cells.web]\ndna = "replicacells.py"\nentry = "replicacells:Outsider"\n\n'


def plan_for(old: str, new: str, code: tuple[str, ...] = ()) -> object:
    here = Path("/srv/mesh/cellmesh.toml")
    return diff_manifests(parse_manifest(old, path=here), parse_manifest(new, path=here),
                          code_changed=code)


def test_replicas_root_reload_diff_turns_a_new_count_into_a_change() -> None:
    plan = plan_for(group_toml(3) + PLAIN, group_toml(5) + PLAIN)
    assert plan.refused == () and plan.replicas == ((GROUP, 5),)  # type: ignore[attr-defined]
    assert plan.lines() == ["change grp to 5 replicas"]  # type: ignore[attr-defined]
    assert plan_for(group_toml(3), group_toml(3)).empty  # type: ignore[attr-defined]


@pytest.mark.parametrize(("old", "new", "refusal"), [
    (group_toml(3), group_toml(3).replace("replicas = 3", "replicas = 3\nenv = {A = 'b'}"),
     "cells.grp.env: a replicated cell's env cannot change while the mesh runs"),
    (group_toml(3), group_toml(5).replace("start_timeout = 60", "start_timeout = 9"),
     "cells.grp.start_timeout: a replicated cell's start_timeout cannot change"),
    (PLAIN, PLAIN + group_toml(3), "cells.grp: a replicated cell cannot be added while the mesh"),
    (PLAIN + group_toml(3), PLAIN, "cells.grp: a replicated cell cannot be removed while the"),
    (PLAIN, PLAIN.replace("\n\n", "\nreplicas = 3\n\n"),
     "cells.web.replicas: a cell cannot become (or stop being) replicated while the mesh runs"),
])  # fmt: skip
def test_replicas_root_reload_diff_refuses_what_a_running_group_cannot_do(
    old: str, new: str, refusal: str
) -> None:
    plan = plan_for(old, new)
    assert any(refusal in r for r in plan.refused), plan  # type: ignore[attr-defined]
    assert plan.replicas == ()  # type: ignore[attr-defined]


def test_replicas_root_reload_diff_swaps_new_code_of_a_group_one_replica_at_a_time() -> None:
    plan = plan_for(group_toml(3), group_toml(3), code=(GROUP,))
    assert plan.refused == () and plan.swap_groups == (GROUP,)  # type: ignore[attr-defined]
    assert plan.lines() == [  # type: ignore[attr-defined]
        "swap grp one replica at a time (dna content changed)"
    ]
    # with a new count too: the swap first, then the membership change
    plan = plan_for(group_toml(3), group_toml(5), code=(GROUP,))
    assert plan.lines() == [  # type: ignore[attr-defined]
        "swap grp one replica at a time (dna content changed)", "change grp to 5 replicas"
    ]


async def test_replicas_root_reload_grows_the_group() -> None:
    home = Path(tempfile.mkdtemp(prefix="cr-", dir="/tmp"))
    try:
        shutil.copy(Path(replicacells.__file__), home / "replicacells.py")
        async with open_root(home, group_toml(3), sandbox="host", stop_timeout=20) as root:
            await healthy(root)
            await note(root, "before")
            (home / "cellmesh.toml").write_text(group_toml(5))
            async with Synapse.grow("mitosis", socket_path=root.paths.umbilical) as ctl:
                report = await ask_root(ctl, ReloadManifest(
                    dry_run=False, timeout=30.0, grace=5.0))
            assert isinstance(report, ReloadReport) and report.ok, report
            assert report.lines == ["grp: 3 -> 5 replicas; added grp/3, grp/4"]
            await healthy(root, count=5)
            (group,) = root.status().groups
            assert (group.members, group.target) == ([0, 1, 2, 3, 4], 5)
            assert await note(root, "after") > 0
    finally:
        shutil.rmtree(home, ignore_errors=True)
