"""Manifest reload: the pure difference (cellmesh.actors.reload) and a live root applying it."""

from __future__ import annotations

import io
import shutil
import tempfile
from pathlib import Path

import pytest
import rootcells
import trio
from rootcells import Echo
from swapcells import Add, Total, source

from cellmesh import Synapse
from cellmesh.actors.control import ReloadManifest, ReloadReport
from cellmesh.actors.manifest import parse_manifest
from cellmesh.actors.reload import Change, diff_manifests
from cellmesh.cli import EXIT_FAILURE, EXIT_USAGE
from cellmesh.cli import report as report_error
from cellmesh.cli._client import RootRefused, ask_root
from cellmesh.testing.mesh import open_root

BASE = """
[supervisor]
intensity = 3
period = 10

[cells.counter]
dna = "counter.py"

[cells.echo]
dna = "rootcells.py"
entry = "rootcells:Echoer"
"""


def plan_for(old: str, new: str, code: tuple[str, ...] = ()) -> object:
    here = Path("/srv/mesh/cellmesh.toml")
    return diff_manifests(parse_manifest(old, path=here), parse_manifest(new, path=here),
                          code_changed=code)


# ------------------------------------------------------------------ the pure difference


def test_reload_diff_identical_manifests_change_nothing() -> None:
    plan = plan_for(BASE, BASE)
    assert plan.empty and plan.lines() == ["nothing changed"]


def test_reload_diff_classifies_every_kind_of_change() -> None:
    new = (
        BASE.replace("intensity = 3", "intensity = 5")
        .replace('entry = "rootcells:Echoer"', 'entry = "rootcells:Echoer"\nrestart = "transient"')
        .replace('[cells.counter]\ndna = "counter.py"', '[cells.counter]\ndna = "counter.py"\n'
                 'env = { MODE = "fast" }')
        + '\n[cells.extra]\ndna = "rootcells.py"\nentry = "rootcells:Echoer"\n'
        + '\n[root]\nrestart_log = 50\n'
    )
    plan = plan_for(BASE, new)
    assert plan.refused == ()
    assert plan.retune == (Change(name="root", keys=("intensity",)),)
    assert plan.update == (Change(name="echo", keys=("restart",)),)
    assert plan.swap == (Change(name="counter", keys=("env",)),)
    assert plan.start == ("extra",) and plan.stop == ()
    assert plan.root == ("restart_log",)
    assert plan.lines() == [
        "retune supervisor root (intensity)",
        "set restart of echo",
        "set [root] restart_log",
        "start extra (new in the manifest)",
        "swap counter (env changed)",
    ]


def test_reload_diff_dna_cache_keep_is_set_in_place() -> None:
    plan = plan_for(BASE, BASE + '\n[root]\ndna_cache_keep = 0\n')
    assert plan.refused == () and plan.root == ("dna_cache_keep",)
    assert plan.lines() == ["set [root] dna_cache_keep"]


def test_reload_diff_code_changed_on_disk_is_a_swap() -> None:
    plan = plan_for(BASE, BASE, code=("counter",))
    assert plan.swap == (Change(name="counter", keys=("dna content",)),)


def test_reload_diff_removed_cells_stop_in_reverse_order() -> None:
    old = BASE + '\n[cells.z]\ndna = "rootcells.py"\nentry = "rootcells:Echoer"\n'
    plan = plan_for(old, BASE.replace('[cells.echo]\ndna = "rootcells.py"\n'
                                      'entry = "rootcells:Echoer"\n', ""))
    assert plan.stop == ("z", "echo")


@pytest.mark.parametrize(
    ("new", "key"),
    [
        (BASE.replace("intensity = 3", 'strategy = "one_for_all"\nintensity = 3'),
         "supervisor.strategy"),
        (BASE + '\n[supervisors.more]\nchildren = []\n', "supervisors.more"),
        (BASE + '\n[root]\nsandbox = "host"\n', "root.sandbox"),
        (BASE.replace("period = 10", 'period = 10\nchildren = ["echo", "counter"]'),
         "supervisor.children"),
        (BASE + '\n[supervisors.sub]\nchildren = ["echo"]\n', "cells.echo"),
    ],
)
def test_reload_diff_refuses_what_cannot_change_live_naming_the_key(new: str, key: str) -> None:
    plan = plan_for(BASE, new)
    assert any(r.startswith(key) for r in plan.refused), plan.refused


# ------------------------------------------------------------------ a live root


async def reload(root: object, *, dry_run: bool = False) -> ReloadReport:
    async with Synapse.grow("mitosis", socket_path=root.paths.umbilical) as syn:  # type: ignore[attr-defined]
        reply = await ask_root(syn, ReloadManifest(timeout=20.0, grace=0.1, dry_run=dry_run))
    assert isinstance(reply, ReloadReport)
    return reply


async def call(root: object, name: str, msg: object) -> object:
    async with Synapse.grow(name, socket_dir=root.paths.socket_dir) as syn:  # type: ignore[attr-defined]
        return await syn.fire(msg)


async def test_reload_applies_a_changed_manifest_to_a_running_mesh() -> None:
    home = Path(tempfile.mkdtemp(prefix="cr-", dir="/tmp"))
    try:
        (home / "counter.py").write_text(source("a"))
        shutil.copy(Path(rootcells.__file__), home / "rootcells.py")
        async with open_root(home, BASE, sandbox="host") as root:
            assert (await call(root, "counter", Add(n=5))) == Total(total=5, version="a")
            echo_pid = next(c.pid for c in root.status().cells if c.name == "echo")
            dry = await reload(root, dry_run=True)
            assert dry.ok and dry.lines == ["nothing would change"]
            async with Synapse.grow("mitosis", socket_path=root.paths.umbilical) as syn:
                for timeout, grace in ((float("inf"), 0.1), (20.0, float("inf")), (0.0, 0.1)):
                    with pytest.raises(RootRefused, match=r"reload: (timeout|grace) must .*"
                                       r"\(nothing was changed\)"):
                        await ask_root(syn, ReloadManifest(timeout=timeout, grace=grace))
            (home / "counter.py").write_text(source("b"))
            (home / "cellmesh.toml").write_text(
                BASE.replace("intensity = 3", "intensity = 7")
                .replace('[cells.echo]\ndna = "rootcells.py"\nentry = "rootcells:Echoer"\n', "")
                + '\n[cells.fresh]\ndna = "rootcells.py"\nentry = "rootcells:Echoer"\n'
            )
            report = await reload(root)
            assert report.ok, report
            assert report.lines == [
                "stopped echo (removed from the manifest)",
                "retuned supervisor root (intensity)",
                "started fresh (new in the manifest)",
                "swapped counter",
            ]
            assert [s.outcome for s in report.swaps] == ["swapped"]
            # The counter kept its state across the swap; the new cell serves.
            assert (await call(root, "counter", Add(n=1))) == Total(total=6, version="b")
            assert (await call(root, "fresh", Echo(3))) == Echo(3)
            names = [c.name for c in root.status().cells]
            assert "echo" not in names and "fresh" in names
            assert echo_pid is not None and not Path(f"/proc/{echo_pid}").exists()
            assert root.supervisors["root"].spec.intensity == 7
            # A change that cannot be applied live refuses the whole reload.
            (home / "cellmesh.toml").write_text(
                (home / "cellmesh.toml").read_text().replace(
                    "intensity = 7", 'strategy = "one_for_all"\nintensity = 9')
            )
            with pytest.raises(RootRefused, match=r"supervisor\.strategy") as info:
                await reload(root)
            assert "nothing was changed" in str(info.value)
            assert root.supervisors["root"].spec.intensity == 7
            # A broken manifest is refused with its key and file.
            (home / "cellmesh.toml").write_text(BASE + "\n[cells.bad]\nnope = 1\n")
            with pytest.raises(RootRefused, match=r"cells\.bad") as bad:
                await reload(root)
            # ... as a configuration error: `cellmesh reload` exits 2, as `up` does.
            assert bad.value.error == "ConfigError"
            assert report_error(bad.value, debug=False, err=io.StringIO()) == EXIT_USAGE
            assert report_error(info.value, debug=False, err=io.StringIO()) == EXIT_FAILURE
            with trio.fail_after(5):
                assert (await call(root, "counter", Add(n=0))) == Total(total=6, version="b")
    finally:
        shutil.rmtree(home, ignore_errors=True)


async def test_reload_swaps_the_running_children_of_a_changed_template() -> None:
    from rootcells import Spawn, WhoAmI

    toml = (
        '[cells.parent]\ndna = "rootcells.py"\nentry = "rootcells:Watcher"\n'
        'max_children = 2\ntemplates = ["worker"]\n\n'
        '[templates.worker]\ndna = "rootcells.py"\nentry = "rootcells:Echoer"\n'
    )
    home = Path(tempfile.mkdtemp(prefix="cr-", dir="/tmp"))
    try:
        shutil.copy(Path(rootcells.__file__), home / "rootcells.py")
        async with open_root(home, toml, sandbox="host") as root:
            await call(root, "parent", Spawn(suffix="w1"))
            before = await call(root, "parent.w1", WhoAmI())
            (home / "cellmesh.toml").write_text(
                toml.replace('entry = "rootcells:Echoer"\n',
                             'entry = "rootcells:Echoer"\nenv = { MODE = "2" }\n')
            )
            report = await reload(root)
            assert report.ok and report.lines == ["swapped parent.w1"], report
            after = await call(root, "parent.w1", WhoAmI())
            assert after.token != before.token  # a new process (a new sandbox: env changed)
            assert root.slots["parent.w1"].decl.env == (("MODE", "2"),)
            assert root.slots["parent"].restarts == 0
    finally:
        shutil.rmtree(home, ignore_errors=True)


async def test_a_change_that_fails_is_retried_by_the_next_reload() -> None:
    """The root's manifest stays true to what runs: a new cell that did not
    start is not added, and a cell whose swap rolled back keeps its old
    declaration, so a corrected manifest's reload applies them."""
    home = Path(tempfile.mkdtemp(prefix="cr-", dir="/tmp"))
    try:
        (home / "counter.py").write_text(source("a"))
        shutil.copy(Path(rootcells.__file__), home / "rootcells.py")
        async with open_root(home, BASE, sandbox="host") as root:
            broken = (BASE.replace('entry = "rootcells:Echoer"', 'entry = "rootcells:Nosuch"')
                      + '\n[cells.extra]\ndna = "rootcells.py"\nentry = "rootcells:Crasher"\n')
            (home / "cellmesh.toml").write_text(broken)
            report = await reload(root)
            assert not report.ok
            assert report.lines[0].startswith(
                "could not start extra (not added; fix it and reload)")
            assert report.lines[0].count("failed to start") == 1  # said once
            assert "RuntimeError in on_start: this cell never starts" in report.lines[0]
            assert report.lines[1].startswith("swap of echo rolled back")
            # the manifest key, as for a cell that does not start (not the runtime variable)
            assert "failed in the import: cells.echo.entry: " in report.lines[1], report
            assert "CELL_ENTRY" not in report.lines[1], report
            assert "extra" not in root.manifest.cells
            assert root.manifest.cells["echo"].entry == "rootcells:Echoer"  # what runs
            assert (await reload(root, dry_run=True)).lines == [
                "would start extra (new in the manifest)", "would swap echo (entry changed)",
            ]
            # Fixed: the next reload starts the new cell (and the swap is retried).
            (home / "cellmesh.toml").write_text(
                broken.replace("rootcells:Crasher", "rootcells:Echoer")
                .replace("rootcells:Nosuch", "rootcells:Boastful")
            )
            report = await reload(root)
            assert report.ok and report.lines == ["started extra (new in the manifest)",
                                                  "swapped echo"], report
            assert (await call(root, "extra", Echo(4))) == Echo(4)
            assert root.manifest.cells["echo"].entry == "rootcells:Boastful"
    finally:
        shutil.rmtree(home, ignore_errors=True)


async def test_reload_refuses_code_that_does_not_import_as_up_does() -> None:
    """A new on-demand cell or template whose entry does not import, or a new cell whose
    name is too long for its socket, refuses the whole reload: nothing changes, no
    socket or check slot is left, and the mesh serves on (its first call would have
    found out, and a cell failing to start for good would have stopped the mesh)."""
    home = Path(tempfile.mkdtemp(prefix="cr-", dir="/tmp"))
    try:
        (home / "counter.py").write_text(source("a"))
        shutil.copy(Path(rootcells.__file__), home / "rootcells.py")
        async with open_root(home, BASE, sandbox="host") as root:
            before = sorted(root.slots)
            sockets = sorted(p.name for p in root.paths.socket_dir.glob("*.sock"))
            for extra, key in (
                ('[cells.od]\ndna = "rootcells.py"\nentry = "rootcells:Nope"\n'
                 'activation = "on_demand"\n', "cells.od.entry"),
                ('[cells.p]\ndna = "rootcells.py"\nentry = "rootcells:Echoer"\n'
                 'max_children = 1\ntemplates = ["w"]\n'
                 '[templates.w]\ndna = "rootcells.py"\nentry = "rootcells:Nope"\n',
                 "templates.w.entry"),
                (f'[cells.{"y" * 120}]\ndna = "rootcells.py"\nentry = "rootcells:Echoer"\n',
                 f"cells.{'y' * 120}"),
            ):
                (home / "cellmesh.toml").write_text(
                    BASE.replace("intensity = 3", "intensity = 4") + "\n" + extra)
                with pytest.raises(RootRefused, match="nothing was changed") as info:
                    await reload(root)
                assert key in str(info.value), info.value
                assert sorted(root.slots) == before
                assert sorted(p.name for p in root.paths.socket_dir.glob("*.sock")) == sockets
                assert root.supervisors["root"].spec.intensity == 3
                assert "od" not in root.manifest.cells and "w" not in root.manifest.templates
            with trio.fail_after(10):
                assert (await call(root, "counter", Add(n=1))) == Total(total=1, version="a")
            # fixed, the same on-demand cell is added and serves at its first call
            (home / "cellmesh.toml").write_text(
                BASE + '\n[cells.od]\ndna = "rootcells.py"\nentry = "rootcells:Echoer"\n'
                'activation = "on_demand"\n')
            report = await reload(root)
            assert report.ok and report.lines == ["started od (new in the manifest)"], report
            with trio.fail_after(10):
                assert (await call(root, "od", Echo(5))) == Echo(5)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _state(root: object, name: str) -> str | None:
    cells = {c.name: c for c in root.status().cells}  # type: ignore[attr-defined]
    return cells[name].state if name in cells else None


async def test_reload_sets_restart_in_place_for_template_children_and_ended_cells() -> None:
    """A template's ``restart`` reaches its running children's supervisor (no swap, and a
    killed child that is now temporary just ends: its supervisor does not loop on it and
    take its siblings down); a temporary cell that ended and is now permanent runs again."""
    from rootcells import Spawn, WhoAmI

    from cellmesh.actors.control import KillCell
    from cellmesh.testing.rootfaults import until

    toml = (
        '[supervisor]\nintensity = 5\nperiod = 10\n\n'
        '[cells.parent]\ndna = "rootcells.py"\nentry = "rootcells:Watcher"\n'
        'max_children = 2\ntemplates = ["worker"]\n\n'
        '[cells.d]\ndna = "rootcells.py"\nentry = "rootcells:Echoer"\nrestart = "temporary"\n\n'
        '[templates.worker]\ndna = "rootcells.py"\nentry = "rootcells:Echoer"\n'
    )
    home = Path(tempfile.mkdtemp(prefix="cr-", dir="/tmp"))
    try:
        shutil.copy(Path(rootcells.__file__), home / "rootcells.py")
        async with open_root(home, toml, sandbox="host") as root:
            for suffix in ("w1", "w2"):
                await call(root, "parent", Spawn(suffix=suffix))
            w2 = await call(root, "parent.w2", WhoAmI())
            changed = toml.replace('entry = "rootcells:Echoer"\n',
                                   'entry = "rootcells:Echoer"\nrestart = "temporary"\n', 2)
            changed = changed.replace('restart = "temporary"\nrestart = "temporary"\n',
                                      'restart = "temporary"\n')
            (home / "cellmesh.toml").write_text(changed)
            assert (await reload(root, dry_run=True)).lines == [
                "would set restart of the running children of template worker"]
            report = await reload(root)
            assert report.ok and report.lines == [
                "set restart of parent.w1", "set restart of parent.w2"], report
            assert (await call(root, "parent.w2", WhoAmI())).token == w2.token  # not swapped
            async with Synapse.grow("mitosis", socket_path=root.paths.umbilical) as ctl:
                await ctl.fire(KillCell(name="parent.w1"))
                await until(root, lambda: _state(root, "parent.w1") in (None, "stopped"),
                            "parent.w1 ended")
                await trio.sleep(1.0)  # (a supervisor looping on it would have given up)
                assert (await call(root, "parent.w2", WhoAmI())).token == w2.token
                ended = [r for r in root.restart_log if r.cell == "parent.w1"]
                assert len(ended) == 1 and "SIGKILL" in ended[0].reason, ended  # no retries
                # a temporary cell that ended, made permanent: it runs again
                await ctl.fire(KillCell(name="d"))
                await until(root, lambda: _state(root, "d") == "stopped", "d ended")
            (home / "cellmesh.toml").write_text(
                changed.replace("intensity = 5", "intensity = 6").replace(
                    'entry = "rootcells:Echoer"\nrestart = "temporary"\n\n[templates',
                    'entry = "rootcells:Echoer"\nrestart = "permanent"\n\n[templates'))
            report = await reload(root)
            assert report.ok, report
            assert report.lines == ["retuned supervisor root (intensity)", "set restart of d",
                                    "started d again (it had ended; now permanent)"], report
            assert (await call(root, "d", Echo(7))) == Echo(7)
            assert _state(root, "d") == "running"
            assert (await reload(root, dry_run=True)).lines == ["nothing would change"]
    finally:
        shutil.rmtree(home, ignore_errors=True)


async def test_reload_adds_a_cell_where_the_manifest_puts_it() -> None:
    """Added between two running siblings of a rest_for_one supervisor, a cell takes its
    manifest place: what the supervisor restarts after a crash, and the stop order."""
    def toml(children: str) -> str:
        cells = "".join(f'[cells.{n}]\ndna = "rootcells.py"\nentry = "rootcells:Echoer"\n\n'
                        for n in ("b", "c", "d"))
        return (f'[supervisor]\nchildren = ["s"]\n\n[supervisors.s]\n'
                f'strategy = "rest_for_one"\nintensity = 5\nchildren = {children}\n\n{cells}')

    home = Path(tempfile.mkdtemp(prefix="cr-", dir="/tmp"))
    try:
        shutil.copy(Path(rootcells.__file__), home / "rootcells.py")
        first = toml('["b", "c"]').replace('[cells.d]\ndna = "rootcells.py"\n'
                                          'entry = "rootcells:Echoer"\n\n', "")
        async with open_root(home, first, sandbox="host") as root:
            (home / "cellmesh.toml").write_text(toml('["b", "d", "c"]'))
            report = await reload(root)
            assert report.ok and report.lines == ["started d (new in the manifest)"], report
            sup = root.supervisors["s"]
            assert [i.child_id for i in sup.which_children()] == ["b", "d", "c"]
            assert (await reload(root, dry_run=True)).lines == ["nothing would change"]
    finally:
        shutil.rmtree(home, ignore_errors=True)
