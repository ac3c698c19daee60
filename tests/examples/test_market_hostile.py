"""The market's exchange against clients that misbehave and a swap that rolls back,
on a real root (examples/market/cellmesh.toml, a copy: the swap edits its code)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import trio
from test_market_example import ROOT, market_module

import cellmesh
from cellmesh.ledger import Account, AccountFlags, LedgerClient, Transfer

protocol: ModuleType = market_module("protocol")
START_CASH, START_SHARES = 1_000_000, 1_000


def _cli(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELL_")}
    env["CELL_HOME"] = str(home)
    result = subprocess.run([sys.executable, "-m", "cellmesh", *args], capture_output=True,
                            text=True, timeout=120, check=False, env=env)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture
def market() -> Iterator[tuple[Path, Path]]:
    """(CELL_HOME, the copy of examples/market) with the market up; down afterwards.
    Under a short /tmp directory: a replica's umbilical socket path must fit in 107
    bytes (pytest's tmp_path, under a parallel run's worker directory, did not)."""
    base = Path(tempfile.mkdtemp(prefix="mh-", dir="/tmp"))
    copy = base / "market"
    shutil.copytree(ROOT / "examples" / "market", copy,
                    ignore=shutil.ignore_patterns("__pycache__"))
    home = base / "home"
    try:
        _cli(home, "up", "-f", str(copy / "cellmesh.toml"))
        try:
            yield home, copy
        finally:
            _cli(home, "down", check=False)
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def _open_accounts(ledger: LedgerClient, traders: range, *, no_shares: int) -> None:
    p = protocol
    floor = AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS
    accounts = [Account(id=p.MINT_CASH, ledger=p.CASH, code=1),
                Account(id=p.MINT_SHARES, ledger=p.SHARES, code=1),
                Account(id=p.ESCROW_CASH, ledger=p.CASH, code=2, flags=floor),
                Account(id=p.ESCROW_SHARES, ledger=p.SHARES, code=2, flags=floor)]
    funding = []
    for t in traders:
        accounts.append(Account(id=p.cash_account(t), ledger=p.CASH, code=3, flags=floor))
        funding.append(Transfer(id=1 + 2 * t, debit_account_id=p.MINT_CASH,
                                credit_account_id=p.cash_account(t), amount=START_CASH,
                                ledger=p.CASH, code=1))
        if t != no_shares:
            accounts.append(Account(id=p.shares_account(t), ledger=p.SHARES, code=3,
                                    flags=floor))
            funding.append(Transfer(id=2 + 2 * t, debit_account_id=p.MINT_SHARES,
                                    credit_account_id=p.shares_account(t),
                                    amount=START_SHARES, ledger=p.SHARES, code=1))
    assert not (await ledger.create_accounts(accounts)).failures()
    assert not (await ledger.create_transfers(funding)).failures()


async def _held(ledger: LedgerClient, ids: list[int]) -> dict[int, int]:
    return {a.id: a.credits_posted - a.debits_posted for a in await ledger.lookup_accounts(ids)}


def test_market_exchange_refuses_hostile_orders_and_a_cancel_strands_no_escrow(
    market: tuple[Path, Path],
) -> None:
    home, _ = market
    p = protocol
    sockets = home / "run"

    async def main() -> None:
        async with cellmesh.Synapse.grow("ledger", socket_dir=sockets) as lsyn, \
                cellmesh.Synapse.grow("exchange", socket_dir=sockets) as ex:
            ledger = LedgerClient.over(lsyn)
            await _open_accounts(ledger, range(4), no_shares=3)
            mint = await _held(ledger, [p.MINT_CASH])
            # A trader id that maps onto the mint, one past the range, one whose
            # shares account does not exist, a megabyte-long price: refused, named.
            for trader, price, why in ((-999, 100, "trader must be in 0..998999"),
                                       (999_000, 100, "trader must be in 0..998999"),
                                       (3, 100, "trader 3 has no account 1000003"),
                                       (0, 1 << 8_000_000, "a 8000001-bit number")):
                placed = await ex.fire(p.Submit(trader=trader, side="buy", price=price, qty=1))
                assert not placed.accepted and why in placed.reason, placed
            assert await _held(ledger, [p.MINT_CASH]) == mint
            # Orders whose callers give up once the exchange has them (while their
            # escrow is on its way to the ledger): each is seen through, so what
            # each one put in escrow is in the book, and Close gives it all back.
            before = await ex.fire(p.GetReport())
            given_up = 0
            for k in range(1, 11):
                answered = False
                async with trio.open_nursery() as nursery:

                    async def order() -> None:
                        nonlocal answered
                        await ex.fire(p.Submit(trader=1, side="buy", price=7, qty=1))
                        answered = True

                    nursery.start_soon(order)
                    async with cellmesh.Synapse.grow("exchange", socket_dir=sockets) as probe:
                        while (await probe.fire(p.GetReport())).orders < before.orders + k:
                            pass  # (each poll is a round trip)
                    nursery.cancel_scope.cancel()  # the exchange has it: the caller gives up
                given_up += not answered
            assert given_up > 0  # (an order whose escrow came first was simply answered)
            # They finish on their own: each ends resting in the book (nothing sells
            # at 7), counted once its escrow is in.
            with trio.move_on_after(30):
                while True:
                    now = await ex.fire(p.GetReport())
                    if now.orders - before.orders == now.resting_orders == 10:
                        break
                    await trio.sleep(0.05)
            assert now.rejected == before.rejected
            assert now.orders - before.orders == now.resting_orders == 10, (
                f"{now}: an order given up left no resting order (its escrow is stranded)")
            await ex.fire(p.Close())
            held = await _held(ledger, [p.ESCROW_CASH, p.ESCROW_SHARES, p.cash_account(1)])
            assert held == {p.ESCROW_CASH: 0, p.ESCROW_SHARES: 0, p.cash_account(1): START_CASH}

    trio.run(main)


def test_market_exchange_halts_after_a_rollback_that_follows_a_trade(
    market: tuple[Path, Path],
) -> None:
    """The new version trades, then fails in its probation: the old version resumes
    behind the ledger. It must not trade on (nor answer EXISTS as settled): it halts."""
    home, copy = market
    p = protocol
    sockets = home / "run"
    code = copy / "cells" / "exchange.py"
    original = code.read_text()
    hook = "    async def on_swap_in(self, state: object, old: cellmesh.CellVersion) -> None:\n"
    assert hook in original
    code.write_text(original.replace('VERSION = "1"', 'VERSION = "2"').replace(
        hook, hook + "        async def fail() -> None:\n"
                     "            await trio.sleep(2)\n"
                     "            raise RuntimeError('a bug found in probation')\n"
                     "        self.nursery.start_soon(fail)\n"))

    async def main() -> None:
        async with cellmesh.Synapse.grow("ledger", socket_dir=sockets) as lsyn:
            ledger = LedgerClient.over(lsyn)
            await _open_accounts(ledger, range(4), no_shares=-1)
            async with cellmesh.Synapse.grow("exchange", socket_dir=sockets) as ex:
                placed = await ex.fire(p.Submit(trader=2, side="sell", price=9000, qty=1))
                assert placed.accepted and placed.resting == 1
            swap: list[Any] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lambda: _run_swap(home, swap))
                with trio.fail_after(60):
                    while True:
                        await trio.sleep(0.1)
                        async with cellmesh.Synapse.grow("exchange", socket_dir=sockets) as ex:
                            if (await ex.fire(p.GetReport())).version == "2":
                                placed = await ex.fire(
                                    p.Submit(trader=3, side="buy", price=9000, qty=1))
                                assert placed.accepted and len(placed.fills) == 1
                                break
            assert swap[0].returncode == 1 and "rolled back" in swap[0].stdout + swap[0].stderr
            async with cellmesh.Synapse.grow("exchange", socket_dir=sockets) as ex:
                assert (await ex.fire(p.GetReport())).version == "1"
                placed = await ex.fire(p.Submit(trader=3, side="buy", price=9000, qty=1))
                assert not placed.accepted
                assert placed.reason.startswith("halted: after a swap rolled back"), placed
                with pytest.raises(cellmesh.RemoteCellError, match="cannot close: halted"):
                    await ex.fire(p.Close())
            # The one trade that happened moved money once; nothing else moved.
            held = await _held(ledger, [p.cash_account(2), p.cash_account(3),
                                        p.shares_account(2), p.shares_account(3)])
            assert held == {p.cash_account(2): START_CASH + 9000,
                            p.cash_account(3): START_CASH - 9000,
                            p.shares_account(2): START_SHARES - 1,
                            p.shares_account(3): START_SHARES + 1}

    trio.run(main)


async def _run_swap(home: Path, out: list[Any]) -> None:
    out.append(await trio.to_thread.run_sync(
        lambda: _cli(home, "swap", "exchange", "--grace", "4", check=False)))
