"""Call the mesh from a script: ``python client.py [NAME]`` (after ``cellmesh up``).

It connects to the greeter's socket in ``$CELL_SOCKET_DIR`` (default
``~/.cell/run``, the same directory ``cellmesh up`` uses). The greeter is
started on demand by this first connection.
"""

from __future__ import annotations

import sys

import trio
from cells.protocol import Greet

import cellmesh


async def main(name: str) -> None:
    async with cellmesh.Synapse.grow("greeter") as greeter:
        greeting = await greeter.fire(Greet(name))  # a Greeting
        print(greeting.text)


if __name__ == "__main__":
    trio.run(main, sys.argv[1] if len(sys.argv) > 1 else "world")
