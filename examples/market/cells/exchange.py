"""The exchange: a limit order book whose every trade settles in the replicated ledger.

An order is accepted once what it could cost is in escrow (one ledger
transfer); it then matches in memory, and each trade pays out of escrow in
one linked chain (seller's cash, buyer's shares, the buyer's price
improvement) before the order is answered: an answered trade is in the
ledger, replicated on a majority. Ledger writes from concurrent orders are
coalesced: one settler task sends whatever is queued as one batch.

Transfer ids are ``id_base << 64 | n``. A batch resent after a leader
failure has the same ids, so the ledger answers ``exists`` instead of moving
money twice. ``id_base`` is the start time of the process (every process its
own, swaps included): if a swap rolls back after the new version took over,
the old version, resuming with its own counter, must not reuse an id the new
one sent, because ``exists`` would then read as settled for a trade that
moved nothing.

An order, once its escrow is asked for, is seen through even if its caller
gives up (the rest of the call is shielded from cancellation): a hold in
escrow with no order in the book would strand the trader's money.

A swap that rolls back after the new version served leaves the old
version's book behind what the ledger holds. The old version checks, at its
first order after such a resume, that the escrow balances are what its book
says; if not, it stops taking orders (each is refused, naming why) rather
than trade on a book that no longer matches the money. (Order numbers the new
version gave to orders the ledger refused may then be given again: they
moved nothing.)
"""

from __future__ import annotations

import time
from collections import deque

import attrs
import trio

import cellmesh
from cellmesh.ledger import BATCH_MAX, LedgerClient, Transfer, TransferFlags, TransferResult

from .book import Book, Order, Trade
from .protocol import (
    ACCOUNT_CLOSED,
    CASH,
    ESCROW_CASH,
    ESCROW_SHARES,
    SHARES,
    BookState,
    Close,
    Fill,
    GetReport,
    Placed,
    Report,
    Submit,
    cash_account,
    shares_account,
)

VERSION = "1"
SETTLED = (TransferResult.OK, TransferResult.EXISTS)


@attrs.define(eq=False)
class _Chain:
    transfers: list[Transfer]
    done: trio.Event = attrs.field(factory=trio.Event)
    results: list[TransferResult] = attrs.field(factory=list)


def _set_event() -> trio.Event:
    event = trio.Event()
    event.set()
    return event


@attrs.define(eq=False)
class Settler:
    """Sends queued transfers to the ledger: everything queued meanwhile goes as one batch."""

    ledger: LedgerClient
    queue: deque[_Chain] = attrs.field(factory=deque)
    wake: trio.Event = attrs.field(factory=trio.Event)
    #: Set while nothing is queued or on its way to the ledger.
    drained: trio.Event = attrs.field(factory=_set_event)
    batches: int = 0

    def enqueue(self, transfers: list[Transfer]) -> _Chain:
        """Queue transfers for the next batch, kept together (a linked chain stays whole)."""
        chain = _Chain(transfers)
        self.queue.append(chain)
        if self.drained.is_set():
            self.drained = trio.Event()
        self.wake.set()
        return chain

    async def settle(self, *chains: list[Transfer]) -> list[TransferResult]:
        """Queue ``chains`` together and return their results once the ledger has them."""
        queued = [self.enqueue(transfers) for transfers in chains]
        for chain in queued:
            await chain.done.wait()
        return [code for chain in queued for code in chain.results]

    async def run(self) -> None:
        while True:
            await self.wake.wait()
            self.wake = trio.Event()
            while self.queue:
                batch: list[_Chain] = []
                size = 0
                while self.queue and (not batch or size + len(self.queue[0].transfers)
                                      <= BATCH_MAX):
                    chain = self.queue.popleft()
                    batch.append(chain)
                    size += len(chain.transfers)
                results = await self._send([t for c in batch for t in c.transfers])
                self.batches += 1
                start = 0
                for chain in batch:
                    chain.results = results[start : start + len(chain.transfers)]
                    start += len(chain.transfers)
                    chain.done.set()
            self.drained.set()

    async def _send(self, transfers: list[Transfer]) -> list[TransferResult]:
        delay = 0.05
        while True:
            try:
                return list((await self.ledger.create_transfers(transfers)).codes)
            except (cellmesh.OutcomeUnknown, cellmesh.CellUnavailable):
                # The same ids again: what was applied answers EXISTS, nothing twice.
                await trio.sleep(delay)
                delay = min(delay * 2, 1.0)


class Exchange(cellmesh.Cell):
    version = VERSION

    async def on_start(self) -> None:
        self.book = Book()
        self.orders = self.rejected = self.transfers = 0
        self.id_base = time.time_ns()  # this process's own (module doc)
        self.ledger = LedgerClient.from_cell(self, "ledger")
        self.settler = Settler(self.ledger)
        self.traders: set[int] = set()  # traders whose two accounts were found open
        self.handed_over = False  # on_swap_out ran: a later call means a rollback
        self.resume_lock = trio.Lock()
        self.halted = ""  # why orders are refused, if they are
        self.nursery.start_soon(self.settler.run)

    # -- hot swap: the book and the counters go to the next version ---------------

    async def on_swap_out(self) -> BookState:
        await self.settler.drained.wait()  # a batch on its way must land before the hand-over
        self.handed_over = True
        return BookState(
            book=self.book.dump(), orders=self.orders, rejected=self.rejected,
            settlement_batches=self.settler.batches, transfers=self.transfers,
            id_base=self.id_base,
        )

    async def on_swap_in(self, state: object, old: cellmesh.CellVersion) -> None:
        if isinstance(state, BookState):
            self.book = Book.load(state.book)
            self.orders, self.rejected = state.orders, state.rejected
            self.settler.batches, self.transfers = state.settlement_batches, state.transfers
            # state.id_base is not taken: this process sends under its own (module doc).

    # -- orders -------------------------------------------------------------------

    @cellmesh.receptor
    async def submit(self, msg: Submit) -> Placed:
        await self._check_resumed()
        problem = self.halted
        if not problem:
            try:
                order = self.book.new_order(msg.trader, msg.side, msg.price, msg.qty)
            except ValueError as exc:
                problem = str(exc)
            else:
                problem = await self._check_trader(order.trader)
        if problem:
            self.rejected += 1
            return Placed(order_id=0, accepted=False, reason=problem, fills=[], resting=0)
        with trio.CancelScope(shield=True):  # escrow asked for: see it through (module doc)
            placed = await self._place(order)
        return placed

    async def _check_trader(self, trader: int) -> str:
        """Why ``trader`` cannot trade ('' if it can): both its accounts must exist
        and be open, or a trade could match and then fail to settle."""
        if trader in self.traders:
            return ""
        wanted = (cash_account(trader), shares_account(trader))
        found = {a.id: a for a in await self.ledger.lookup_accounts(wanted)}
        for account_id in wanted:
            account = found.get(account_id)
            if account is None:
                return f"trader {trader} has no account {account_id} in the ledger"
            if account.flags & ACCOUNT_CLOSED:
                return f"trader {trader}'s account {account_id} is closed"
        self.traders.add(trader)
        return ""

    async def _check_resumed(self) -> None:
        if self.handed_over:
            async with self.resume_lock:  # one check; the calls behind it wait for it
                if self.handed_over:
                    await self._check_after_rollback()

    async def _check_after_rollback(self) -> None:
        """First order after a rolled-back swap: does the book still match the escrow?"""
        self.traders.clear()
        resting = self.book.resting()
        expected = {
            ESCROW_CASH: sum(o.price * o.qty for o in resting if o.side == "buy"),
            ESCROW_SHARES: sum(o.qty for o in resting if o.side == "sell"),
        }
        for account in await self.ledger.lookup_accounts(list(expected)):
            held = account.credits_posted - account.debits_posted
            if held != expected[account.id]:
                self.halted = (
                    f"halted: after a swap rolled back, escrow account {account.id} holds "
                    f"{held} where this version's book accounts for {expected[account.id]} "
                    "(the new version traded before it failed)"
                )
        self.handed_over = False

    async def _place(self, order: Order) -> Placed:
        self.orders += 1
        buying = order.side == "buy"
        hold = self._transfer(
            debit=(cash_account if buying else shares_account)(order.trader),
            credit=ESCROW_CASH if buying else ESCROW_SHARES,
            amount=order.price * order.qty if buying else order.qty,
            ledger=CASH if buying else SHARES,
        )
        (code,) = await self.settler.settle([hold])
        if code not in SETTLED:
            self.rejected += 1
            return Placed(order_id=order.order_id, accepted=False, reason=code.name.lower(),
                          fills=[], resting=0)
        # Matching and queueing the payouts happen with no await between: the
        # settler owns them from here, even if this call were cancelled.
        trades = self.book.submit(order)
        codes = await self.settler.settle(*(self._payout(t) for t in trades))
        if any(c not in SETTLED for c in codes):
            raise RuntimeError(f"order {order.order_id}: a fill did not settle: {codes}")
        fills = [
            Fill(fill_id=t.fill_id, buy_order=t.buy.order_id, sell_order=t.sell.order_id,
                 buyer=t.buy.trader, seller=t.sell.trader, price=t.price, qty=t.qty)
            for t in trades
        ]
        return Placed(order_id=order.order_id, accepted=True, reason="", fills=fills,
                      resting=order.qty)

    @cellmesh.receptor
    async def close(self, msg: Close) -> Report:
        await self._check_resumed()
        if self.halted:  # refunds from a book that does not match escrow would be wrong
            raise RuntimeError(f"cannot close: {self.halted}")
        refunds = [self._refund(order) for order in self.book.cancel_all()]
        if refunds:
            codes = await self.settler.settle(*([r] for r in refunds))
            if any(c not in SETTLED for c in codes):
                raise RuntimeError(f"refunds did not settle: {codes}")
        return self._report()

    @cellmesh.receptor
    async def report(self, msg: GetReport) -> Report:
        return self._report()

    def _report(self) -> Report:
        return Report(
            version=VERSION, orders=self.orders, rejected=self.rejected,
            fills=self.book.next_fill - 1, resting_orders=len(self.book.resting()),
            settlement_batches=self.settler.batches, transfers=self.transfers,
        )

    # -- transfers ----------------------------------------------------------------

    def _transfer(self, *, debit: int, credit: int, amount: int, ledger: int,
                  linked: bool = False) -> Transfer:
        self.transfers += 1
        return Transfer(
            id=self.id_base << 64 | self.transfers, debit_account_id=debit,
            credit_account_id=credit, amount=amount, ledger=ledger, code=1,
            flags=TransferFlags.LINKED if linked else 0,
        )

    def _payout(self, trade: Trade) -> list[Transfer]:
        """Escrow pays the seller and the buyer (and any price improvement), atomically."""
        improvement = (trade.buy.price - trade.price) * trade.qty
        chain = [
            self._transfer(debit=ESCROW_CASH, credit=cash_account(trade.sell.trader),
                           amount=trade.price * trade.qty, ledger=CASH, linked=True),
            self._transfer(debit=ESCROW_SHARES, credit=shares_account(trade.buy.trader),
                           amount=trade.qty, ledger=SHARES, linked=bool(improvement)),
        ]
        if improvement:
            chain.append(self._transfer(debit=ESCROW_CASH, credit=cash_account(trade.buy.trader),
                                        amount=improvement, ledger=CASH))
        return chain

    def _refund(self, order: Order) -> Transfer:
        buying = order.side == "buy"
        return self._transfer(
            debit=ESCROW_CASH if buying else ESCROW_SHARES,
            credit=(cash_account if buying else shares_account)(order.trader),
            amount=order.price * order.qty if buying else order.qty,
            ledger=CASH if buying else SHARES,
        )
