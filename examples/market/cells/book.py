"""A limit order book with price-time priority (pure: no I/O, no clock).

:meth:`Book.submit` matches an incoming order against the opposite side,
best price first and, at one price, oldest first; a trade happens at the
resting order's price. What is left of the incoming order rests in the
book. :meth:`Book.cancel_all` empties it. :meth:`Book.dump` / :meth:`Book.load`
carry it across a hot swap, byte for byte.
"""

from __future__ import annotations

import bisect
from collections import deque

import attrs
import cbor2

from .protocol import MAX_PRICE, MAX_QTY, MAX_TRADER


def _short(n: int) -> str:
    """``n`` for an error message: a huge one by its size, not its digits."""
    return str(n) if n.bit_length() <= 64 else f"a {n.bit_length()}-bit number"


@attrs.define
class Order:
    order_id: int
    trader: int
    side: str
    price: int
    qty: int


@attrs.frozen
class Trade:
    fill_id: int
    buy: Order  # the two orders as they were when they traded
    sell: Order
    price: int
    qty: int


@attrs.define
class Book:
    next_order: int = 1
    next_fill: int = 1
    # price -> orders at that price, oldest first; prices kept sorted ascending
    bids: dict[int, deque[Order]] = attrs.field(factory=dict)
    asks: dict[int, deque[Order]] = attrs.field(factory=dict)
    bid_prices: list[int] = attrs.field(factory=list)
    ask_prices: list[int] = attrs.field(factory=list)

    def new_order(self, trader: int, side: str, price: int, qty: int) -> Order:
        """Number a new order (ids carry over swaps: see exchange.py for a rollback)."""
        if side not in ("buy", "sell"):
            raise ValueError(f"side must be 'buy' or 'sell', not {side!r}")
        if not 0 <= trader < MAX_TRADER:
            raise ValueError(f"trader must be in 0..{MAX_TRADER - 1} (got {_short(trader)})")
        if price <= 0 or qty <= 0:
            raise ValueError(
                f"price and qty must be positive (got {_short(price)}, {_short(qty)})")
        if price > MAX_PRICE or qty > MAX_QTY:
            raise ValueError(f"price and qty must be at most {MAX_PRICE} and {MAX_QTY} "
                             f"(got {_short(price)}, {_short(qty)})")
        order = Order(order_id=self.next_order, trader=trader, side=side, price=price, qty=qty)
        self.next_order += 1
        return order

    def submit(self, order: Order) -> list[Trade]:
        """Match ``order``; what is left of it rests. Returns the trades in order."""
        buying = order.side == "buy"
        levels, prices = (self.asks, self.ask_prices) if buying else (self.bids, self.bid_prices)
        trades: list[Trade] = []
        while order.qty and prices:
            best = prices[0] if buying else prices[-1]
            if (buying and best > order.price) or (not buying and best < order.price):
                break
            queue = levels[best]
            resting = queue[0]
            qty = min(order.qty, resting.qty)
            buy, sell = (order, resting) if buying else (resting, order)
            trades.append(Trade(
                fill_id=self.next_fill, buy=attrs.evolve(buy), sell=attrs.evolve(sell),
                price=best, qty=qty,
            ))
            self.next_fill += 1
            order.qty -= qty
            resting.qty -= qty
            if not resting.qty:
                queue.popleft()
                if not queue:
                    del levels[best]
                    prices.pop(0 if buying else -1)
        if order.qty:
            self._rest(order)
        return trades

    def _rest(self, order: Order) -> None:
        levels, prices = (self.bids, self.bid_prices) if order.side == "buy" else (
            self.asks, self.ask_prices)
        if order.price not in levels:
            levels[order.price] = deque()
            bisect.insort(prices, order.price)
        levels[order.price].append(order)

    def resting(self) -> list[Order]:
        """Every resting order, bids then asks, in priority order."""
        bids = [o for p in reversed(self.bid_prices) for o in self.bids[p]]
        return bids + [o for p in self.ask_prices for o in self.asks[p]]

    def cancel_all(self) -> list[Order]:
        """Empty the book; returns what was resting."""
        gone = self.resting()
        self.bids.clear()
        self.asks.clear()
        self.bid_prices.clear()
        self.ask_prices.clear()
        return gone

    def dump(self) -> bytes:
        rows = [[o.order_id, o.trader, o.side, o.price, o.qty] for o in self.resting()]
        return cbor2.dumps([self.next_order, self.next_fill, rows])

    @classmethod
    def load(cls, data: bytes) -> Book:
        next_order, next_fill, rows = cbor2.loads(data)
        book = cls(next_order=next_order, next_fill=next_fill)
        for order_id, trader, side, price, qty in rows:
            book._rest(Order(order_id=order_id, trader=trader, side=side, price=price, qty=qty))
        return book
