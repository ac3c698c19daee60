"""Issue 12, item 5 (Jepsen part): a bank on the replicated ledger through the real root.

A manifest declares ``entry = "cellmesh.ledger:Ledger"`` with ``replicas = 3``;
the root runs it under bwrap (each replica fsyncs its log). Concurrent clients
move money with single transfers, linked chains and two-phase transfers while
:func:`cellmesh.testing.rootfaults.nemesis` kills the leader with SIGKILL,
pauses the next leader with SIGSTOP past an election timeout, and kills each
follower in turn (their supervisors restart them from their logs). Then
(``ledgerload.LedgerBank.check``): every read conserved money and balanced,
every acknowledged transfer is applied exactly once, every retry (the
synapse's own across the faults, the application's after a success or an
unknown outcome) answered without applying twice, the replicas are
byte-identical, and ``cellmesh ledger check`` (the operator's command, run
against the live root) says the books balance.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from ledgerload import DNA, GROUP, LedgerBank, ledger_toml, open_books

from cellmesh.actors.root import Root
from cellmesh.testing.mesh import open_root
from cellmesh.testing.rootfaults import RootGroup, under_faults


@pytest.fixture
def bwrap(bwrap_usable: str | None) -> None:
    if bwrap_usable is not None:
        pytest.skip(bwrap_usable)


@asynccontextmanager
async def ledger_root() -> AsyncIterator[Root]:
    home = Path(tempfile.mkdtemp(prefix="cl-", dir="/tmp"))
    try:
        (home / "ledgerdna.py").write_text(DNA)
        async with open_root(home, ledger_toml(3), sandbox="bwrap", stop_timeout=20) as root:
            yield root
    finally:
        shutil.rmtree(home, ignore_errors=True)


async def cli_check(root: Root) -> str:
    """``cellmesh ledger check`` as an operator runs it, against this root."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELL_")}
    env |= {"CELL_SOCKET_DIR": str(root.paths.socket_dir),
            "CELL_UMBILICAL": str(root.paths.umbilical)}
    done = await trio.run_process([sys.executable, "-m", "cellmesh", "ledger", "check"],
                                  env=env, capture_stdout=True, capture_stderr=True, check=False)
    out = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 0, out
    return out.strip().splitlines()[-1]


async def run_ledger_under_faults(*, cycles: int, writes: int, clients: int) -> None:
    async with ledger_root() as root:
        group = RootGroup(root=root, name=GROUP)
        await group.a_leader()
        await open_books(root)
        load = LedgerBank(root, clients=clients)
        restarts = await under_faults(group, load.driver, cycles=cycles, writes=writes)
        await group.converge(expect_members=3)
        unknown = len(load.unknown)
        await load.retry_unknown()
        await group.converge(expect_members=3)
        await load.check(await cli_check(root))
        await group.identical()
        print(f"ledger: {len(load.answered)} transfers answered, {unknown} unknown (retried), "
              f"{len(load.unsent)} never sent, {load.reads} reads, {load.retries} retries; "
              f"restarts {restarts}; errors {load.errors[:5]}")


async def test_ledger_root_bank_survives_kills_and_pauses(bwrap: None) -> None:
    await run_ledger_under_faults(cycles=2, writes=60, clients=5)


@pytest.mark.slow
async def test_ledger_root_bank_soak(bwrap: None) -> None:
    """The same, longer: more cycles, more clients, more writes between faults."""
    await run_ledger_under_faults(cycles=5, writes=150, clients=8)
