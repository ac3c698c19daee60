"""A replicated cell's answer that its client refuses (docs/replicated.md section 2).

A reply over the client's own decode budget -- here a map of 90,000 entries, a
frame of about 1 MB, far below the 16 MiB frame limit -- is not a lost
connection: every client raises ``ReplyRefused`` at once, naming the cause, and
never resends the call. A write is applied once (the group answered it); a read
simply failed. The Trio synapse used to resend such a call until
``give_up_after`` and then raise ``OutcomeUnknown`` ("no answer after
retrying"), the group sending the whole reply again on every retry; the asyncio
and blocking clients raised ``OutcomeUnknown`` at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

import cbor2
import pytest
import trio

import cellmesh
from cellmesh import CommandMeta, ReplicatedCell, Synapse, aio, query
from cellmesh.errors import ErrorCode, ReplyRefused
from cellmesh.testing import open_replica_group

pytestmark = pytest.mark.slow

#: Entries enough for the client to refuse a reply holding them (about 87,400 pass).
REFUSED_ENTRIES = 90_000


@cellmesh.protein("t.refused.Grow")
class Grow:
    """Add ``n`` entries; the reply holds every entry."""

    n: int


@cellmesh.protein("t.refused.Dump")
class Dump:
    """Read every entry."""


@cellmesh.protein("t.refused.Count")
class Count:
    """Read how many commands were applied and how many entries there are."""


@cellmesh.protein("t.refused.Entries")
class Entries:
    ops: dict[str, int]


@cellmesh.protein("t.refused.Counted")
class Counted:
    applied: int
    size: int


class Heap(ReplicatedCell):
    """Entries that only grow; replies as large as the state."""

    commands = (Grow,)

    def __init__(self) -> None:
        self.applied = 0
        self.ops: dict[str, int] = {}

    def apply(self, command: Any, meta: CommandMeta) -> Entries:
        del meta
        self.applied += 1
        start = len(self.ops)
        self.ops.update((str(i), i) for i in range(start, start + command.n))
        return Entries(ops=dict(self.ops))

    @query
    def dump(self, q: Dump) -> Entries:
        del q
        return Entries(ops=dict(self.ops))

    @query
    def count(self, q: Count) -> Counted:
        del q
        return Counted(applied=self.applied, size=len(self.ops))

    def snapshot(self) -> bytes:
        return cbor2.dumps([self.applied, self.ops], canonical=True)

    def restore(self, data: bytes) -> None:
        self.applied, self.ops = cbor2.loads(data)


def refused_at_once(exc: BaseException) -> None:
    assert isinstance(exc, ReplyRefused), exc
    assert (exc.cell, exc.code, exc.in_flight) == ("heap", ErrorCode.MALFORMED_FRAME, 1)
    assert "decode budget" in exc.reason
    assert "for a command it may have taken effect" in str(exc)


async def test_replicated_refused_reply_is_raised_at_once_by_every_client() -> None:
    with trio.fail_after(60):
        async with open_replica_group(Heap, name="heap") as g:
            async with Synapse.grow("heap", socket_dir=g.socket_dir, give_up_after=3.0) as syn:
                start = trio.current_time()
                with pytest.raises(ReplyRefused) as write:
                    await syn.fire(Grow(n=REFUSED_ENTRIES))  # applied; its reply refused
                with pytest.raises(ReplyRefused) as read:
                    await syn.fire(Dump())  # simply failed
                assert trio.current_time() - start < 2.0  # not after give_up_after
                refused_at_once(write.value)
                refused_at_once(read.value)
                # The write was applied exactly once, and the session goes on.
                assert await syn.fire(Count()) == Counted(applied=1, size=REFUSED_ENTRIES)

            async def asyncio_client() -> BaseException:
                async with aio.Synapse.grow("heap", socket_dir=g.socket_dir) as client:
                    with pytest.raises(ReplyRefused) as info:
                        await client.fire(Dump())
                    return info.value

            def blocking_client() -> BaseException:
                with cellmesh.connect("heap", socket_dir=g.socket_dir) as client:
                    with pytest.raises(ReplyRefused) as info:
                        client.fire(Dump(), timeout=20)
                    return info.value

            refused_at_once(await trio.to_thread.run_sync(lambda: asyncio.run(asyncio_client())))
            refused_at_once(await trio.to_thread.run_sync(blocking_client))
