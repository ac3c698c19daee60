"""The Pong cell: answers every Ping with a Pong carrying the same number.

Run it, then call it from anywhere with ``caller.py``::

    python examples/ping/pong_cell.py &
    python examples/ping/caller.py
"""

import signal

import trio
from protocol import Ping, Pong

import cellmesh


async def pong(msg: Ping) -> Pong:
    return Pong(msg.n)


async def main() -> None:
    # Serve until SIGTERM/SIGINT, then drain in-flight calls and remove the socket.
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with cellmesh.open_membrane("pong", pong) as membrane:
            print(f"pong: serving on {membrane.socket_path}", flush=True)
            async for _ in signals:
                break
    print("pong: stopped", flush=True)


if __name__ == "__main__":
    trio.run(main)
