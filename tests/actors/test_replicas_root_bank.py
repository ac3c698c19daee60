"""Issue 11, item 6: a replicated bank through the real root, under bwrap, under faults.

A manifest declares ``cellmesh.testing.bank.Bank`` with ``replicas = 3``; the
root runs it sandboxed. Concurrent clients transfer and read while the test
kills the leader with SIGKILL, pauses the (new) leader with SIGSTOP for longer
than an election timeout, and kills each follower in turn (their supervisors
restart them). Then: every read summed to the total, every acknowledged write
is in the final state exactly once, the history is linearizable, and the
replicas are byte-identical (``bankload.BankLoad.check``). The faults are
:func:`cellmesh.testing.rootfaults.nemesis`.

A replica whose write-ahead log is damaged refuses to start: the root gives
it up, shows the file and offset in ``status`` and ``logs``, and the group
serves on the other two; ``cellmesh wipe`` rebuilds it from its peers.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import bankload
import pytest
from bankload import GROUP, BankLoad, bank, bank_toml, deposit_all

from cellmesh import Synapse
from cellmesh.actors.control import WipeReplica
from cellmesh.actors.logs import read_log
from cellmesh.actors.root import Root
from cellmesh.testing.bank import GetBalances, Receipt, Transfer
from cellmesh.testing.mesh import open_root
from cellmesh.testing.rootfaults import under_faults, until

HERE = Path(__file__).resolve().parent


@pytest.fixture
def bwrap(bwrap_usable: str | None) -> None:
    if bwrap_usable is not None:
        pytest.skip(bwrap_usable)


@asynccontextmanager
async def bank_root(replicas: int, home: Path | None = None) -> AsyncIterator[Root]:
    own = home is None
    where = home if home is not None else Path(tempfile.mkdtemp(prefix="cb-", dir="/tmp"))
    try:
        shutil.copy(HERE / "bankcell.py", where / "bankcell.py")
        async with open_root(where, bank_toml(replicas), sandbox="bwrap",
                             stop_timeout=20) as root:
            yield root
    finally:
        if own:
            shutil.rmtree(where, ignore_errors=True)


async def run_bank_under_faults(*, cycles: int, progress: int, clients: int) -> None:
    async with bank_root(3) as root:
        await bank(root).a_leader()
        await deposit_all(root)
        load = BankLoad(root, clients=clients)
        restarts = await under_faults(bank(root), load.driver, cycles=cycles, writes=progress)
        await load.check(expect_members=3)
        print(f"bank: {len(load.acknowledged)} writes acknowledged, {len(load.unknown)} "
              f"unknown, {len(load.unsent)} never sent, {load.reads} reads; restarts "
              f"{restarts}; errors {load.errors[:5]}")


async def test_replicas_root_bank_survives_kills_and_pauses(bwrap: None) -> None:
    await run_bank_under_faults(cycles=2, progress=50, clients=5)


@pytest.mark.slow
async def test_replicas_root_bank_soak(bwrap: None) -> None:
    """The same, longer: more cycles, more clients, more writes between faults."""
    await run_bank_under_faults(cycles=6, progress=120, clients=8)


async def test_replicas_root_damaged_wal_refuses_start_and_the_group_serves(bwrap: None) -> None:
    home = Path(tempfile.mkdtemp(prefix="cb-", dir="/tmp"))
    try:
        async with bank_root(3, home) as root:
            await bank(root).a_leader()
            await deposit_all(root)
            async with Synapse.grow(GROUP, socket_dir=root.paths.socket_dir) as syn:
                for n in range(30):
                    await syn.fire(Transfer(id=f"w{n}", src="a", dst="b", amount=1))
            await bank(root).converge(expect_members=3)
            data = root.paths.data_dir / GROUP / "1"
        # Damage the middle of replica 1's log: flip a byte halfway through its
        # segment, in a frame that later valid frames follow (a torn tail would
        # be truncated instead, a truncated file refused as lost state).
        segment = bankload.wal_segments(data)[0]
        raw = bytearray(segment.read_bytes())
        assert len(raw) > 1000, "the log should hold many batches"
        raw[len(raw) // 2] ^= 0xFF
        segment.write_bytes(bytes(raw))
        async with bank_root(3, home) as root:

            def given_up() -> bool:
                row = next(c for c in root.status().cells if c.name == f"{GROUP}/1")
                return row.replica is not None and row.replica.given_up

            # the group is up once a majority is; the damaged one is given up meanwhile
            await until(root, given_up, "bank/1 to be given up")
            row = next(c for c in root.status().cells if c.name == f"{GROUP}/1")
            assert row.replica is not None
            assert segment.name in row.replica.error and "corrupt at byte" in row.replica.error
            assert row.state == "stopped"
            view = read_log(root.paths.log_dir, f"{GROUP}..1")
            assert any(segment.name in line and "corrupt at byte" in line for line in view.lines)
            # the group serves on replicas 0 and 2
            async with Synapse.grow(GROUP, socket_dir=root.paths.socket_dir) as syn:
                receipt = await syn.fire(Transfer(id="after", src="b", dst="c", amount=5))
                assert isinstance(receipt, Receipt) and receipt.ok
                balances = await syn.fire(GetBalances())
            assert sum(balances.balances.values()) == bankload.TOTAL
            # cellmesh wipe rebuilds it from its peers
            async with Synapse.grow("mitosis", socket_path=root.paths.umbilical) as ctl:
                ack = await ctl.fire(WipeReplica(name=f"{GROUP}/1"))
            assert "wiped bank/1" in ack.text
            await bank(root).converge(expect_members=3)
            await bank(root).identical()
            row = next(c for c in root.status().cells if c.name == f"{GROUP}/1")
            assert row.replica is not None and not row.replica.given_up
            assert row.replica.role in ("follower", "leader") and row.replica.error == ""
    finally:
        shutil.rmtree(home, ignore_errors=True)
