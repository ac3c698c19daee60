"""The greeter cell: greets a visitor, counting the visit in the store cell."""

from __future__ import annotations

import cellmesh

from .protocol import Count, Greet, Greeting


class Greeter(cellmesh.Cell):
    """Answers Greet with a Greeting; the store counts the visits."""

    @cellmesh.receptor
    async def greet(self, msg: Greet) -> Greeting:
        counted = await self.call("store", Count(msg.name))  # a Counted, to mypy too
        times = "once" if counted.visits == 1 else f"{counted.visits} times"
        return Greeting(text=f"Hello, {msg.name}! You have visited {times}.",
                        visits=counted.visits)
