"""Call the Pong cell: one call, a pipelined batch, and a timed round trip."""

import time

import trio
from protocol import Ping, Pong

import cellmesh


async def main() -> None:
    async with cellmesh.Synapse.grow("pong") as syn:
        reply = await syn.fire(Ping(42))
        print(f"caller: fire(Ping(42)) -> {reply!r}")
        assert reply == Pong(42)

        replies = await syn.fire_many([Ping(i) for i in range(1000)])
        assert replies == [Pong(i) for i in range(1000)]
        print(f"caller: fire_many of 1000 pings -> {len(replies)} pongs, in order")

        rounds = 2000
        start = time.perf_counter()
        for i in range(rounds):
            await syn.fire(Ping(i))
        rtt = (time.perf_counter() - start) / rounds * 1e6
        print(f"caller: {rounds} sequential round trips, mean {rtt:.0f} us each")


if __name__ == "__main__":
    trio.run(main)
