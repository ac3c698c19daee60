"""The ledger cell (issue 12 item 4) and LedgerClient (item 2), through a real replica group.

``open_replica_group`` serves three replicas of :class:`cellmesh.ledger.Ledger`
in the test's Trio run (real Raft, real WAL with fsync, real sockets); the
process tests run them as ``python -m cellmesh.actors.runtime`` processes,
killed with SIGKILL.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import cbor2
import pytest
import trio

from cellmesh import Cell, RemoteCellError, Synapse, protein, receptor
from cellmesh.actors.runtime import serve_cell
from cellmesh.ledger import (
    BATCH_MAX,
    Account,
    AccountFlags,
    AccountResult,
    CheckBooks,
    CreateTransfers,
    GetAccountTransfers,
    InvalidQuery,
    Ledger,
    LedgerClient,
    LedgerRejected,
    LookupAccounts,
    NotALedgerReply,
    PendingStatus,
    Rejected,
    Transfer,
    TransferFlags,
    TransferResult,
)
from cellmesh.testing import open_replica_group, process_replica_group
from cellmesh.transport.session import OpenSession, SessionCall, SessionOpened
from cellmesh.wire.proteins import fingerprint

USD = 840
LIMITED = AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS


def accounts(*ids: int, flags: int = 0) -> list[Account]:
    return [Account(id=i, ledger=USD, code=1, flags=flags) for i in ids]


def move(tid: int, debit: int, credit: int, amount: int, **kw: Any) -> Transfer:
    return Transfer(id=tid, debit_account_id=debit, credit_account_id=credit, amount=amount,
                    ledger=USD, code=1, **kw)


class QuickPulseLedger(Ledger):
    """The ledger with a short pulse poll (the test waits on a 1 s timeout)."""

    pulse_poll: ClassVar[float] = 0.05


async def test_ledger_cell_serves_writes_and_reads_through_the_client() -> None:
    async with open_replica_group(Ledger, name="ledger",
                                  env={"CELL_REPLICA_CHECK": "1"}) as g:
        async with Synapse.grow("ledger", socket_dir=g.socket_dir) as syn:
            ledger = LedgerClient.over(syn)
            made = await ledger.create_accounts(accounts(1) + accounts(2, 3, flags=LIMITED))
            assert made.ok and len(made) == 3 and made.failures() == []
            again = await ledger.create_accounts(accounts(2, flags=LIMITED))
            assert again.codes == (AccountResult.EXISTS,)
            results = await ledger.create_transfers([
                move(10, 1, 2, 500),
                move(11, 2, 3, 200, flags=TransferFlags.PENDING, timeout=60),
                move(12, 2, 3, 900),  # 300 left of 500, 200 reserved
            ])
            assert results.failures() == [(2, TransferResult.EXCEEDS_CREDITS)]
            assert results[0] is TransferResult.OK and results.timestamp > 0
            posted = await ledger.create_transfers([
                Transfer(id=13, pending_id=11, amount=150,
                         flags=TransferFlags.POST_PENDING_TRANSFER),
            ])
            assert posted.ok
            two, three = await ledger.lookup_accounts([2, 3, 99])
            assert (two.debits_posted, two.debits_pending, two.credits_posted) == (150, 0, 500)
            assert three.credits_posted == 150
            assert [t.id for t in await ledger.lookup_transfers([13, 12, 10])] == [13, 10]
            page = await ledger.get_account_transfers(2, limit=2)
            assert [t.id for t in page] == [10, 11]
            history = [t.id async for t in ledger.account_history(2, page=1)]
            assert history == [10, 11, 13]
            newest = [t.id async for t in ledger.account_history(
                2, page=2, flags=7)]
            assert newest == [13, 11, 10]
            assert await ledger.pending_statuses([11, 10]) == [PendingStatus.POSTED, None]
            totals = await ledger.totals()
            assert totals.balanced and totals.ledgers[0].debits_posted == 650
            books = await ledger.check()
            assert books.ok and books.transfers == 3 and books.violation_count == 0
            with pytest.raises(InvalidQuery, match="limit"):  # the client's check: not sent
                await ledger.get_account_transfers(2, limit=0)
            with pytest.raises(RemoteCellError) as info:  # sent anyway: the cell's check
                await syn.fire(GetAccountTransfers(account_id=2, limit=0))
            assert info.value.type_name == "cellmesh.ledger.errors.InvalidQuery"
            assert "limit" in info.value.remote_message
        digests = await g.wait_converged()
        assert len({d.sha256 for d in digests}) == 1


async def test_ledger_cell_refuses_whole_commands_as_ledger_rejected() -> None:
    async with open_replica_group(Ledger, name="ledger") as g:
        async with Synapse.grow("ledger", socket_dir=g.socket_dir) as syn:
            too_many = [move(i + 1, 1, 2, 1) for i in range(BATCH_MAX + 1)]
            reply = await syn.fire(CreateTransfers(events=too_many))
            assert isinstance(reply, Rejected) and reply.reason == "too_many_events"
            ledger = LedgerClient.over(syn)
            with pytest.raises(InvalidQuery) as local:
                await ledger.create_transfers(too_many)
            assert local.value.field == "transfers" and "8191" in str(local.value)

    async def rejecting(msg: Any) -> Any:
        return Rejected(reason="clock_exhausted", detail="past 2**63")

    with pytest.raises(LedgerRejected) as info:
        await LedgerClient(rejecting).create_transfers([move(1, 1, 2, 1)])
    assert info.value.reason == "clock_exhausted"

    async def stranger(msg: Any) -> Any:
        return "not a ledger"

    with pytest.raises(NotALedgerReply, match="LookupAccounts"):
        await LedgerClient(stranger).lookup_accounts([1])


async def test_ledger_cell_resubmitted_events_answer_exists_from_any_client() -> None:
    """Sessions dedupe a client's retries; ids dedupe the same events from anyone."""
    async with open_replica_group(Ledger, name="ledger") as g:
        batch = [move(100 + i, 1, 2, 10) for i in range(50)]
        async with Synapse.grow("ledger", socket_dir=g.socket_dir, client_name="a") as a:
            first = LedgerClient.over(a)
            assert (await first.create_accounts(accounts(1, 2))).ok
            assert (await first.create_transfers(batch)).ok
        async with Synapse.grow("ledger", socket_dir=g.socket_dir, client_name="b") as b:
            second = LedgerClient.over(b)
            again = await second.create_transfers(batch)
            assert set(again.codes) == {TransferResult.EXISTS}
            one, two = await second.lookup_accounts([1, 2])
            assert one.debits_posted == two.credits_posted == 500


async def test_ledger_cell_pulse_expires_pending_transfers_without_writes() -> None:
    """No client writes after the pending transfer: the leader's pulse expires it."""
    async with open_replica_group(QuickPulseLedger, name="ledger") as g:
        async with Synapse.grow("ledger", socket_dir=g.socket_dir) as syn:
            ledger = LedgerClient.over(syn)
            assert (await ledger.create_accounts(accounts(1, 2))).ok
            held = await ledger.create_transfers([
                move(7, 1, 2, 40, flags=TransferFlags.PENDING, timeout=1)])
            assert held.ok
            with trio.fail_after(30):
                # the expiry is a timeout of one second of the leader's clock
                while await ledger.pending_statuses([7]) != [PendingStatus.EXPIRED]:
                    await trio.sleep(0.05)
            one, = await ledger.lookup_accounts([1])
            assert one.debits_pending == 0 and one.debits_posted == 0
        digests = await g.wait_converged()
        assert len({d.sha256 for d in digests}) == 1


@protein("tests.ledger.Pay")
class Pay:
    tid: int
    amount: int


@protein("tests.ledger.Paid")
class Paid:
    code: int


class Teller(Cell):
    """A plain cell paying through the ledger with LedgerClient.from_cell."""

    @receptor
    async def pay(self, msg: Pay) -> Paid:
        results = await LedgerClient.from_cell(self, "ledger").create_transfers(
            [move(msg.tid, 1, 2, msg.amount)])
        return Paid(code=int(results[0]))


async def test_ledger_client_from_a_cell_calls_the_group() -> None:
    async with open_replica_group(Ledger, name="ledger") as g, trio.open_nursery() as nursery:
        async with Synapse.grow("ledger", socket_dir=g.socket_dir) as syn:
            assert (await LedgerClient.over(syn).create_accounts(accounts(1, 2))).ok
        await nursery.start(lambda task_status: serve_cell(
            Teller(), name="teller", socket_dir=g.socket_dir, task_status=task_status))
        async with Synapse.grow("teller", socket_dir=g.socket_dir) as teller:
            assert (await teller.fire(Pay(tid=5, amount=3))).code == TransferResult.OK
            assert (await teller.fire(Pay(tid=5, amount=3))).code == TransferResult.EXISTS
        nursery.cancel_scope.cancel()


def test_ledger_state_pulse_due_in_counts_down_to_the_earliest_expiry() -> None:
    from ledgerkit import EPOCH, SECOND, Book

    book = Book()
    assert book.state.pulse_due_in(EPOCH) is None
    book.accounts(*accounts(1, 2))
    book.transfers(move(3, 1, 2, 5, flags=TransferFlags.PENDING, timeout=2))
    created = book.state.lookup_transfers([3])[0].timestamp
    due_in = book.state.pulse_due_in(created)
    assert due_in is not None and math.isclose(due_in, 2.0)
    assert book.state.pulse_due_in(created + 5 * SECOND) == 0.0


def test_ledger_check_books_lists_and_counts_broken_limits() -> None:
    """A healthy ledger never breaks a limit; a corrupted one (forced here) is reported."""
    from ledgerkit import Book

    book = Book()
    book.accounts(*accounts(1), *accounts(2, 3, 4, flags=LIMITED))
    book.transfers(move(9, 1, 2, 10))
    state = book.state
    assert state.check_books().ok
    store = state._store  # forced corruption: no public way exists, by design
    for aid in (4, 3):
        store.accounts[aid].dpo += 7
    report = state.query(CheckBooks(max_violations=1))
    assert not report.ok and report.violation_count == 2
    (first,) = report.violations
    assert (first.account_id, first.limit) == (3, "debits_must_not_exceed_credits")
    assert [t.ledger for t in report.unbalanced] == [USD]
    with pytest.raises(InvalidQuery) as info:
        state.query(CheckBooks(max_violations=0))
    assert info.value.field == "max_violations"


async def test_ledger_retry_after_a_leader_kill_applies_once() -> None:
    """A command in flight when the leader dies -9 is resent in its session and applied
    once; resubmitting its events afterwards answers ``exists``.

    The followers are stopped while the command reaches the leader, so it cannot commit
    before the kill: the client's copy must be resent to the next leader.
    """
    with process_replica_group("cellmesh.ledger:Ledger", name="ledger") as g:
        old = await g.leader()
        async with Synapse.grow("ledger", socket_dir=g.socket_dir, retry_after=0.5) as syn:
            ledger = LedgerClient.over(syn)
            assert (await ledger.create_accounts(accounts(1, 2))).ok
            followers = [r for r in g.members if r != old]
            for r in followers:
                g.pause(r)
            batch = [move(500 + i, 1, 2, 1) for i in range(100)]
            async with trio.open_nursery() as nursery:
                done: list[Any] = []

                async def send() -> None:
                    done.append(await ledger.create_transfers(batch))

                nursery.start_soon(send)
                await trio.sleep(0.3)  # the fault schedule: the command reaches the leader
                g.kill(old)
                for r in followers:
                    g.resume(r)
            (results,) = done
            assert set(results.codes) <= {TransferResult.OK}, results.failures()[:3]
            again = await ledger.create_transfers(batch)
            assert set(again.codes) == {TransferResult.EXISTS}
            one, two = await ledger.lookup_accounts([1, 2])
            assert one.debits_posted == two.credits_posted == 100
            assert (await ledger.check()).ok
        g.start(old)
        digests = await g.wait_converged()
        assert len({d.sha256 for d in digests}) == 1


async def test_ledger_cell_survives_hostile_commands_and_queries() -> None:
    """Attack surface of the ledger cell: events of the wrong types (in the log, every
    replica refuses them alike), out-of-range and giant values, oversized batches and
    lookups, unbounded query parameters. Each is answered with a result code or an error
    reply; nothing is applied; the group keeps serving and the replicas stay identical."""
    with trio.fail_after(60):
        async with open_replica_group(Ledger, name="ledger") as g:
            fp = fingerprint(CreateTransfers)
            wire_name = "cellmesh.ledger.CreateTransfers"
            bad_bodies = [
                [wire_name, [["cellmesh.ledger.Transfer", "not", "ints"]]],
                [wire_name, "not a list"],
                [wire_name, [[1, 2, 3]]],
            ]
            async with Synapse.grow("ledger", socket_dir=g.socket_dir) as raw:
                raw._sessions = None  # speak the envelopes by hand
                opened = await raw.fire(OpenSession())
                assert isinstance(opened, SessionOpened)
                for seq, body in enumerate(bad_bodies, 1):
                    with pytest.raises(RemoteCellError):
                        await raw.fire(SessionCall(session=opened.session, seq=seq, floor=seq,
                                                   fingerprint=fp, body=cbor2.dumps(body)))
            async with Synapse.grow("ledger", socket_dir=g.socket_dir) as syn:
                ledger = LedgerClient.over(syn)
                assert (await ledger.create_accounts(accounts(1, 2))).ok
                giant = await ledger.create_transfers([
                    move(2**200, 1, 2, 5), move(-3, 1, 2, 5), move(9, 1, 2, 2**300),
                    move(10, 1, 2, -1)])
                assert set(giant.codes) == {TransferResult.FIELD_OUT_OF_RANGE}
                for query in (LookupAccounts(ids=list(range(BATCH_MAX + 1))),
                              CheckBooks(max_violations=10**9),
                              GetAccountTransfers(account_id=1, limit=10**9),
                              GetAccountTransfers(account_id=0)):
                    with pytest.raises(RemoteCellError) as info:
                        await syn.fire(query)
                    assert info.value.type_name == "cellmesh.ledger.errors.InvalidQuery"
                books = await ledger.check()
                assert books.ok and books.transfers == 0
            digests = await g.wait_converged()
            assert len({d.sha256 for d in digests}) == 1


async def test_ledger_cell_proposes_only_its_commands() -> None:
    """ReplicatedCell.propose refuses a protein that is not one of the class's commands
    (before touching the runtime: a query proposed by mistake never reaches the log)."""
    with pytest.raises(TypeError, match="LookupAccounts is not one of its commands"):
        await Ledger().propose(LookupAccounts(ids=[1]))
