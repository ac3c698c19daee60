"""The market demo: its order book (pure) and the whole run, as `scripts/demo.sh` runs it."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]


def _load_book() -> ModuleType:
    """examples/market/cells/book.py, by path: every example names its package ``cells``."""
    path = ROOT / "examples" / "market" / "cells" / "book.py"
    spec = importlib.util.spec_from_file_location("market_example_book", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # attrs resolves annotations through it
    spec.loader.exec_module(module)
    return module


Book = _load_book().Book

orders = st.lists(
    st.tuples(st.integers(0, 5), st.sampled_from(["buy", "sell"]), st.integers(95, 105),
              st.integers(1, 20)),
    max_size=80,
)


def test_market_book_matches_best_price_then_oldest_at_the_resting_price() -> None:
    book = Book()
    first = book.new_order(1, "sell", 101, 5)
    second = book.new_order(2, "sell", 100, 5)
    third = book.new_order(3, "sell", 100, 5)
    for order in (first, second, third):
        assert book.submit(order) == []
    trades = book.submit(book.new_order(4, "buy", 102, 12))
    assert [(t.sell.order_id, t.price, t.qty) for t in trades] == [
        (second.order_id, 100, 5), (third.order_id, 100, 5), (first.order_id, 101, 2),
    ]
    assert [(o.order_id, o.qty) for o in book.resting()] == [(first.order_id, 3)]


def test_market_book_refuses_bad_orders() -> None:
    book = Book()
    for side, price, qty in (("hold", 100, 1), ("buy", 0, 1), ("sell", 100, -1)):
        try:
            book.new_order(1, side, price, qty)
        except ValueError:
            continue
        raise AssertionError(f"{side} {price} {qty} was accepted")


@settings(max_examples=200, deadline=None)
@given(orders)
def test_market_book_conserves_quantity_and_never_crosses(
    batch: list[tuple[int, str, int, int]],
) -> None:
    book = Book()
    submitted = traded = 0
    for trader, side, price, qty in batch:
        order = book.new_order(trader, side, price, qty)
        submitted += qty
        for trade in book.submit(order):
            assert trade.buy.price >= trade.price >= trade.sell.price
            traded += 2 * trade.qty
        bids = [o.price for o in book.resting() if o.side == "buy"]
        asks = [o.price for o in book.resting() if o.side == "sell"]
        assert not bids or not asks or max(bids) < min(asks)
    assert submitted == traded + sum(o.qty for o in book.resting())
    again = Book.load(book.dump())
    assert again.resting() == book.resting() and again.dump() == book.dump()
    assert again.next_order == book.next_order and again.next_fill == book.next_fill


def test_market_example_settles_every_trade_through_a_kill_and_a_swap() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELL_")}
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "market" / "run.py"), "--orders", "2000"],
        capture_output=True, text=True, timeout=600, check=False, env=env,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "orders answered in" in out and ", 0 failed;" in out
    assert "version 2 took over with the order book and served the last" in out
    assert "killed the ledger's leader" in out and "swapped the exchange to version 2" in out
    assert "audit: every trader's cash and shares add up, escrow is empty" in out
    assert "the books of 'ledger' balance" in out
    assert "processes of the mesh left after down: none" in out
    assert "market: OK" in out

