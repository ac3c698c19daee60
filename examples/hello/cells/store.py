"""The store cell: counts visits per name (in memory: a restart starts over)."""

from __future__ import annotations

import cellmesh

from .protocol import Count, Counted


class Store(cellmesh.Cell):
    """Keeps a visit count per name."""

    async def on_start(self) -> None:
        self.visits: dict[str, int] = {}
        print(f"{self.name}: ready", flush=True)

    @cellmesh.receptor
    async def count(self, msg: Count) -> Counted:
        visits = self.visits.get(msg.name, 0) + 1
        self.visits[msg.name] = visits
        return Counted(name=msg.name, visits=visits)
