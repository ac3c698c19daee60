"""The pricer: quotes prices, and crashes now and then (every ``CRASH_EVERY`` quotes).

The crash is deliberate: it shows the supervisor restarting the cell while
the frontend keeps serving (it retries a quote once when the pricer is gone).
"""

import os

import cellmesh

from .protocol import Price, Quote

PRICES = {"apple": 50, "pear": 65, "fig": 120}


class Pricer(cellmesh.Cell):
    quotes = 0

    async def on_start(self) -> None:
        self.crash_every = int(os.environ.get("CRASH_EVERY", "0"))

    @cellmesh.receptor
    async def quote(self, msg: Quote) -> Price:
        self.quotes += 1
        if self.crash_every and self.quotes % self.crash_every == 0:
            os._exit(3)  # a crash, as abrupt as they come
        return Price(PRICES.get(msg.item, 100) * msg.quantity)
