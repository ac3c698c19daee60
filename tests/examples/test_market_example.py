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


def market_module(name: str) -> ModuleType:
    """examples/market/cells/NAME.py, by path, in a package of its own name: every
    example names its package ``cells``."""
    if "market_example_cells" not in sys.modules:
        package = ROOT / "examples" / "market" / "cells"
        spec = importlib.util.spec_from_file_location(
            "market_example_cells", package / "__init__.py",
            submodule_search_locations=[str(package)],
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # attrs resolves annotations through it
        spec.loader.exec_module(module)
    return importlib.import_module(f"market_example_cells.{name}")


Book = market_module("book").Book

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
    """Bad sides and sizes, and traders whose accounts would be the mint's or
    the escrow's (``cash_account(-999)`` is the mint) or another trader's."""
    book = Book()
    huge = 1 << 8_000_000  # a megabyte-long integer must not reach the ledger
    for trader, side, price, qty in (
        (1, "hold", 100, 1), (1, "buy", 0, 1), (1, "sell", 100, -1),
        (-999, "buy", 100, 1), (-1, "sell", 100, 1), (999_000, "buy", 100, 1),
        (1, "buy", huge, 1), (1, "sell", 100, huge), (1, "buy", 10**9 + 1, 1),
    ):
        try:
            book.new_order(trader, side, price, qty)
        except ValueError as exc:
            assert len(str(exc)) < 200  # the message does not print the huge number
            continue
        raise AssertionError(f"{trader} {side} {price} {qty} was accepted")
    assert book.next_order == 1  # refused orders take no id
    assert book.new_order(998_999, "buy", 10**9, 10**9).order_id == 1


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

