"""The proteins of the market, and the ledger accounts it settles in.

Two ledgers hold the money and the stock: ``CASH`` (cents) and ``SHARES``.
Each trader ``t`` owns one account in each (``cash_account(t)``,
``shares_account(t)``) that may never go below zero; the exchange holds an
escrow account in each. An order first moves what it could cost into escrow
(a buy: ``price * qty`` cents; a sell: ``qty`` shares), so a trade it makes
later always settles: escrow pays the seller, the buyer and the price
improvement back, in one linked chain (all or nothing).
"""

from __future__ import annotations

import cellmesh

CASH = 1  # ledger of money, in cents
SHARES = 2  # ledger of the one stock traded
MINT_CASH, MINT_SHARES = 1, 2  # where the traders' starting balances come from
ESCROW_CASH, ESCROW_SHARES = 3, 4  # the exchange's: what resting orders hold
ACCOUNT_CLOSED = 1 << 3  # cellmesh.ledger.AccountFlags.CLOSED


#: Trader ids are 0 .. MAX_TRADER - 1: their accounts never meet the mint's, the
#: escrow's or each other's (cash 1000.., shares 1000000..).
MAX_TRADER = 999_000
#: An order's price (cents) and quantity are at most these: ``price * qty`` fits
#: a u64, and a hostile order cannot make the exchange or the ledger carry a
#: megabyte-long integer.
MAX_PRICE = 10**9
MAX_QTY = 10**9


def cash_account(trader: int) -> int:
    return 1_000 + trader


def shares_account(trader: int) -> int:
    return 1_000_000 + trader


@cellmesh.protein("market.Fill")
class Fill:
    """One trade: ``qty`` shares at ``price`` cents each, between two orders."""

    fill_id: int
    buy_order: int
    sell_order: int
    buyer: int
    seller: int
    price: int
    qty: int


@cellmesh.protein("market.Placed")
class Placed:
    """The exchange's answer to :class:`Submit`: settled fills, and what rests."""

    order_id: int
    accepted: bool
    reason: str
    fills: list[Fill]
    resting: int


@cellmesh.protein("market.Submit")
class Submit(cellmesh.Request[Placed]):
    """A limit order: buy or sell ``qty`` shares at ``price`` cents or better."""

    trader: int
    side: str  # "buy" or "sell"
    price: int
    qty: int


@cellmesh.protein("market.Report")
class Report:
    """The exchange's figures since it first started (they survive swaps)."""

    version: str
    orders: int
    rejected: int
    fills: int
    resting_orders: int
    settlement_batches: int
    transfers: int


@cellmesh.protein("market.GetReport")
class GetReport(cellmesh.Request[Report]):
    """Ask for the :class:`Report`."""


@cellmesh.protein("market.Close")
class Close(cellmesh.Request[Report]):
    """Cancel every resting order, returning its escrow; the market stays open."""


@cellmesh.protein("market.BookState")
class BookState:
    """What one exchange version hands the next in a hot swap (``cellmesh swap``)."""

    book: bytes
    orders: int
    rejected: int
    settlement_batches: int
    transfers: int
    id_base: int
