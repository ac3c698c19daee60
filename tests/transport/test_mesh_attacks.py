"""Wire attacks from a hostile cell, through a real root, on real bwrap cells (issue 10).

The attacker (``wirecells.Attacker``) mounts them from inside its sandbox, on
raw sockets: against a neighbour it may call (items 1, 3, 4, 5) and against
its own umbilical to the root (items 1, 3, 5, 6). What must hold: the victim
keeps its process (no crash, no restart) and keeps serving, its memory and
descriptors stay bounded (``/proc/<pid>/status`` and ``/proc/<pid>/fd``); the
root keeps answering its control socket and keeps spawning, with bounded
descriptors (``/proc/self/fd``: the root runs in this process).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import wirecells
from wirecells import Attack, Echo

from cellmesh import Synapse
from cellmesh.actors.control import UMBILICAL_LIMITS, StatusReply, StatusRequest
from cellmesh.actors.root import Root
from cellmesh.errors import ErrorCode
from cellmesh.sandbox._bwrap import find_bwrap, probe_bwrap
from cellmesh.testing.mesh import open_root

pytestmark = pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs /proc")
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def bwrap() -> None:
    path = find_bwrap()
    if path is None:
        pytest.skip("bwrap is not installed (scripts/setup.sh installs it as root)")
    problem = probe_bwrap(path)
    if problem is not None:
        pytest.skip(f"bwrap sandbox unavailable: {problem}")


def cell(name: str, cls: str, extra: str = "") -> str:
    return f'[cells.{name}]\ndna = "wirecells.py"\nentry = "wirecells:{cls}"\n{extra}\n'


@asynccontextmanager
async def mesh(toml: str) -> AsyncIterator[Root]:
    home = Path(tempfile.mkdtemp(prefix="cm-", dir="/tmp"))
    try:
        shutil.copy(Path(wirecells.__file__), home / "wirecells.py")
        async with open_root(home, toml, sandbox="bwrap") as root:
            yield root
    finally:
        shutil.rmtree(home, ignore_errors=True)


def pid_of(root: Root, name: str) -> int:
    pid = next(c.pid for c in root.status().cells if c.name == name)
    assert pid is not None
    return pid


def runtime_of(pid: int) -> int:
    """The cell's Python process among ``pid`` and its descendants (bwrap runs it
    below its own init)."""
    todo = [pid]
    while todo:
        current = todo.pop()
        argv = Path(f"/proc/{current}/cmdline").read_bytes().split(b"\0")
        if b"bwrap" not in argv[0] and b"cellmesh.actors.runtime" in argv:
            return current
        for task in Path(f"/proc/{current}/task").iterdir():
            todo.extend(int(c) for c in (task / "children").read_text().split())
    raise AssertionError(f"no cell runtime below pid {pid}")


def fds_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def peak_rss_mib(pid: int) -> float:
    """VmHWM: the process's peak resident memory so far."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


async def sample_fds(pid: int, out: list[int], task_status: trio.TaskStatus[None]) -> None:
    """Sample ``pid``'s descriptor count every millisecond until cancelled (a sampler,
    not a synchronisation: it only has to see what stays held)."""
    task_status.started()
    while True:
        out.append(fds_of(pid))
        await trio.sleep(0.001)


def own_fds() -> int:
    return len(os.listdir("/proc/self/fd")) - 1


async def attack(syn: Synapse, target: str, kind: str, count: int = 1) -> wirecells.Outcome:
    with trio.fail_after(120):
        outcome: wirecells.Outcome = await syn.fire(Attack(target=target, kind=kind, count=count))
    return outcome


async def test_mesh_attack_a_caller_cell_cannot_take_down_its_callee(bwrap: None) -> None:
    toml = cell("attacker", "Attacker", 'calls = ["victim"]') + cell("victim", "Echoer")
    async with mesh(toml) as root:
        sockets = root.paths.socket_dir
        victim_pid = pid_of(root, "victim")
        victim = runtime_of(victim_pid)
        fds_before = fds_of(victim)
        async with Synapse.grow("attacker", socket_dir=sockets) as evil, \
                Synapse.grow("victim", socket_dir=sockets) as syn:
            assert await syn.fire(Echo(1)) == Echo(1)
            # Items 3 and 4: two 16 MiB frames of empty arrays (1.25 GB each, before).
            outcome = await attack(evil, "victim", "bomb", count=2)
            assert outcome.codes == [ErrorCode.MALFORMED_FRAME] * 2
            # Item 3: a first frame of 16 MiB is refused from its header.
            assert (await attack(evil, "victim", "header")).codes == [ErrorCode.BAD_HANDSHAKE]
            # Item 1: descriptors behind a frame that never completes (1344 sent).
            sampled: list[int] = []
            async with trio.open_nursery() as nursery:
                await nursery.start(sample_fds, victim, sampled)
                outcome = await attack(evil, "victim", "fds", count=20)
                nursery.cancel_scope.cancel()
            assert outcome.codes == [ErrorCode.BAD_VESICLE]
            # At most two frames' worth were ever held (and the sampler's own).
            assert max(sampled) - fds_before <= 2 * 64 + 4
            # Item 5: calls whose replies are never read: cut off past its window.
            outcome = await attack(evil, "victim", "noread", count=50_000)
            assert outcome.sent < 50_000
            # The victim never died, serves on, and holds nothing of it.
            assert await syn.fire(Echo(2)) == Echo(2)
            assert pid_of(root, "victim") == victim_pid
            assert fds_of(victim) <= fds_before + 2
            assert peak_rss_mib(victim) < 200, "a frame was allocated in full"
        rows = {c.name: c for c in root.status().cells}
        assert rows["victim"].restarts == 0 and rows["victim"].state == "running"
        assert rows["attacker"].state == "running"


async def test_mesh_attack_on_the_umbilical_leaves_the_root_serving_and_spawning(
    bwrap: None,
) -> None:
    toml = cell("attacker", "Attacker") + cell("echo", "Echoer")
    logs: list[str] = []
    async with mesh(toml) as root:
        sockets = root.paths.socket_dir
        before = own_fds()
        async with Synapse.grow("attacker", socket_dir=sockets) as evil:
            # Item 6: a connection flood on its own umbilical stops at the cap
            # (its runtime already holds one), with a reason.
            held = await attack(evil, "mitosis", "hold", count=40)
            assert held.sent <= UMBILICAL_LIMITS["max_connections"]
            assert held.codes and set(held.codes) == {ErrorCode.CONNECTION_LIMIT}
            assert (await attack(evil, "mitosis", "release")).sent == held.sent
            # Items 1, 3 and 5 on the umbilical.
            result = await attack(evil, "mitosis", "fds", count=20)
            assert result.codes == [ErrorCode.BAD_VESICLE]
            result = await attack(evil, "mitosis", "bomb", count=2)
            assert result.codes == [ErrorCode.MALFORMED_FRAME] * 2
            assert (await attack(evil, "mitosis", "header")).codes == [ErrorCode.BAD_HANDSHAKE]
            result = await attack(evil, "mitosis", "noread", count=50_000)
            assert result.sent < 50_000
            # Hold the umbilical's cap again, then check the root: control socket,
            # a spawn (a restart of echo), bounded descriptors.
            held = await attack(evil, "mitosis", "hold", count=40)
            assert own_fds() - before <= UMBILICAL_LIMITS["max_connections"] + 16
            async with Synapse.grow("mitosis", socket_path=root.paths.umbilical) as ctl:
                assert isinstance(await ctl.fire(StatusRequest()), StatusReply)
            old = pid_of(root, "echo")
            instance = root.slots["echo"].instance
            assert instance is not None
            root.backend.kill(instance.cell_id, as_crash=True)
            with trio.fail_after(60):
                while next(c.pid for c in root.status().cells if c.name == "echo") in (None, old):
                    await trio.sleep(0.05)
            async with Synapse.grow("echo", socket_dir=sockets) as syn:
                assert await syn.fire(Echo(3)) == Echo(3)
            await attack(evil, "mitosis", "release")
            # The attacker, too, is still up: at most it could have killed itself.
            assert await evil.fire(Echo(4)) == Echo(4)
        assert root.contained_failures == 0, logs
