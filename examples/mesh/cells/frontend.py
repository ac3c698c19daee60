"""The frontend: takes orders, asks the pricer, records in the ledger.

It monitors the pricer: every time the pricer goes down it hears a
``CellDown`` and keeps the reason (the demo prints them).
"""

import cellmesh

from .protocol import Order, Price, Quote, Receipt, Record, Summary, SummaryReply, Total


class Frontend(cellmesh.Cell):
    async def on_start(self) -> None:
        self.orders = 0
        self.pricer_downs: list[str] = []
        await self.monitor("pricer")

    async def on_cell_down(self, down: cellmesh.CellDown) -> None:
        self.pricer_downs.append(down.reason)
        await self.monitor("pricer")  # monitors fire once: watch the restarted pricer

    @cellmesh.receptor
    async def order(self, msg: Order) -> Receipt:
        quote = Quote(item=msg.item, quantity=msg.quantity)
        try:
            price: Price = await self.call("pricer", quote)
        except cellmesh.CellUnavailable:
            price = await self.call("pricer", quote)  # restarted by its supervisor
        total: Total = await self.call("ledger", Record(order_id=msg.order_id, cents=price.cents))
        self.orders += 1
        return Receipt(order_id=msg.order_id, price_cents=price.cents, total_cents=total.cents)

    @cellmesh.receptor
    async def summary(self, msg: Summary) -> SummaryReply:
        return SummaryReply(orders=self.orders, pricer_downs=list(self.pricer_downs))
