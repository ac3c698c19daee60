"""The ledger: a running total of recorded orders (started on its first call)."""

import cellmesh

from .protocol import Record, Total


class Ledger(cellmesh.Cell):
    async def on_start(self) -> None:
        self.seen: dict[int, int] = {}

    @cellmesh.receptor
    async def record(self, msg: Record) -> Total:
        self.seen.setdefault(msg.order_id, msg.cents)  # idempotent: a retry adds nothing
        return Total(cents=sum(self.seen.values()), orders=len(self.seen))
