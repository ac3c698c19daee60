"""Client sessions (docs/protocol.md section 17): a synapse talking to a server that
announces sessions wraps calls in envelopes and resends them, transparently to ``fire``.

The servers here are scripted membranes (no Raft): they see every envelope, so the tests
check what travels on the wire and what the caller sees when the server breaks, stalls,
forgets a session or never comes back.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import cbor2
import pytest
import trio
import trio.testing

import cellmesh
from cellmesh import OutcomeUnknown, Receptors, Synapse, open_membrane
from cellmesh.errors import CellUnavailable, RemoteCellError
from cellmesh.transport.session import (
    CloseSession,
    OpenSession,
    SessionCall,
    SessionFault,
    SessionOpened,
)
from cellmesh.wire.codec import Hello
from cellmesh.wire.proteins import PROTEINS, DecodeContext, fingerprint


@cellmesh.protein("t.session.Inc")
class Inc:
    n: int


@cellmesh.protein("t.session.Total")
class Total:
    total: int


@attrs.define(eq=False)
class Server:
    """A scripted sessions server: ``on_call(envelope, copy)`` decides each answer."""

    path: Path
    on_call: Callable[[SessionCall, int], Awaitable[Any]]
    seen: list[SessionCall] = attrs.Factory(list)
    sessions: int = 0
    closed: list[int] = attrs.Factory(list)
    scope: trio.CancelScope | None = None

    async def open(self, msg: OpenSession) -> SessionOpened:
        del msg
        self.sessions += 1
        return SessionOpened(session=self.sessions)

    async def close(self, msg: CloseSession) -> None:
        self.closed.append(msg.session)

    async def call(self, env: SessionCall) -> Any:
        copies = sum(1 for e in self.seen if (e.session, e.seq) == (env.session, env.seq))
        self.seen.append(env)
        return await self.on_call(env, copies)

    async def serve(self, task_status: trio.TaskStatus[None]) -> None:
        with trio.CancelScope() as self.scope:
            receptors = Receptors(
                {OpenSession: self.open, SessionCall: self.call, CloseSession: self.close}
            )
            async with open_membrane("srv", receptors, socket_path=self.path, sessions=True):
                task_status.started()
                await trio.sleep_forever()


def inner(env: SessionCall) -> Any:
    return PROTEINS.decode(cbor2.loads(env.body), DecodeContext())


async def answer(env: SessionCall, copy: int) -> Total:
    del copy
    return Total(total=inner(env).n)


@asynccontextmanager
async def running(
    nursery: trio.Nursery, path: Path, on_call: Callable[[SessionCall, int], Awaitable[Any]]
) -> AsyncIterator[Server]:
    server = Server(path, on_call)
    await nursery.start(server.serve)
    yield server


@pytest.fixture
def sock() -> Any:
    with tempfile.TemporaryDirectory(prefix="cms-", dir="/tmp") as name:
        yield Path(name) / "srv.sock"


def test_sessions_hello_option_round_trips_and_is_checked() -> None:
    hello = Hello(version=1, name="s", proteins={}, sessions=True)
    assert Hello.from_wire(hello.to_wire()).sessions is True
    plain = Hello(version=1, name="s", proteins={})
    assert "sessions" not in plain.to_wire()[4]  # the spec's hex examples are unchanged
    bad = hello.to_wire()
    bad[4]["sessions"] = 1
    with pytest.raises(cellmesh.ProtocolError):
        Hello.from_wire(bad)


async def test_sessions_calls_are_wrapped_numbered_and_unwrapped(sock: Path) -> None:
    async with trio.open_nursery() as nursery, running(nursery, sock, answer) as server:
        async with Synapse.grow("srv", socket_path=sock) as syn:
            assert await syn.fire(Inc(5)) == Total(5)
            assert await syn.fire_many([Inc(1), Inc(2)]) == [Total(1), Total(2)]
        while not server.closed:
            await trio.sleep(0.001)  # the goodbye signal is on its way
        nursery.cancel_scope.cancel()
    assert server.sessions == 1
    assert server.closed == [1]  # the closing synapse said goodbye
    assert [(e.session, e.seq) for e in server.seen] == [(1, 1), (1, 2), (1, 3)]
    assert server.seen[0].fingerprint == fingerprint(Inc)
    # The floor is the lowest seq still waiting: each call waited only for itself,
    # and the second batch sent 2 and 3 together.
    assert [e.floor for e in server.seen] == [1, 2, 2]


async def test_sessions_floor_trails_the_oldest_call_in_flight(sock: Path) -> None:
    release = trio.Event()

    async def slow_first(env: SessionCall, copy: int) -> Total:
        del copy
        if env.seq == 1:
            await release.wait()
        return Total(total=env.floor)

    async with trio.open_nursery() as nursery, running(nursery, sock, slow_first):
        async with Synapse.grow("srv", socket_path=sock) as syn:
            first: list[Any] = []

            async def call_first() -> None:
                first.append(await syn.fire(Inc(0)))

            nursery.start_soon(call_first)
            while syn._sessions is None or syn._sessions.session is None:
                await trio.sleep(0.001)  # the first call is opening the session
            await trio.testing.wait_all_tasks_blocked()
            assert await syn.fire(Inc(0)) == Total(1)  # seq 2 sees floor 1 (seq 1 waits)
            release.set()
            await trio.testing.wait_all_tasks_blocked()
            assert first == [Total(1)]
            assert await syn.fire(Inc(0)) == Total(3)  # nothing older waits any more
        nursery.cancel_scope.cancel()


async def test_sessions_resend_the_same_envelope_after_the_server_dies(sock: Path) -> None:
    """A connection broken mid-call: the call is resent (same session and seq) to the
    server that comes back, and the caller sees only the answer."""
    async with trio.open_nursery() as nursery:
        stuck = trio.Event()

        async def hang(env: SessionCall, copy: int) -> Total:
            del env, copy
            stuck.set()
            await trio.sleep_forever()
            raise AssertionError("unreachable")

        first = Server(sock, hang)
        await nursery.start(first.serve)
        async with Synapse.grow("srv", socket_path=sock) as syn:
            result: list[Any] = []

            async def call() -> None:
                result.append(await syn.fire(Inc(7)))

            nursery.start_soon(call)
            await stuck.wait()
            assert first.scope is not None
            first.scope.cancel()  # the server dies: its connections close at once
            await trio.testing.wait_all_tasks_blocked()
            second = Server(sock, answer, sessions=first.sessions)
            await nursery.start(second.serve)
            while not result:
                await trio.sleep(0.005)  # the synapse reconnects and resends
            assert result == [Total(7)]
        nursery.cancel_scope.cancel()
    assert [(e.session, e.seq) for e in first.seen] == [(1, 1)]
    assert [(e.session, e.seq) for e in second.seen] == [(1, 1)]


async def test_sessions_resend_after_retry_after_without_an_answer(sock: Path) -> None:
    """A stalled server (think SIGSTOP) breaks nothing: after retry_after the synapse
    abandons the connection and sends the same envelope again."""

    async def second_copy_only(env: SessionCall, copy: int) -> Total:
        if copy == 0:
            await trio.sleep_forever()
        return Total(total=inner(env).n)

    async with trio.open_nursery() as nursery, running(nursery, sock, second_copy_only) as srv:
        async with Synapse.grow("srv", socket_path=sock, retry_after=0.05) as syn:
            assert await syn.fire(Inc(3)) == Total(3)
        nursery.cancel_scope.cancel()
    assert [(e.session, e.seq) for e in srv.seen] == [(1, 1), (1, 1)]


async def test_sessions_outcome_unknown_when_no_copy_is_ever_answered(sock: Path) -> None:
    async def never(env: SessionCall, copy: int) -> Total:
        del env, copy
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async with trio.open_nursery() as nursery, running(nursery, sock, never):
        async with Synapse.grow("srv", socket_path=sock, retry_after=0.05,
                                give_up_after=0.3) as syn:
            with pytest.raises(OutcomeUnknown) as info:
                await syn.fire(Inc(1))
            assert info.value.cell == "srv"
            assert not isinstance(info.value, CellUnavailable)
        nursery.cancel_scope.cancel()


async def test_sessions_unavailable_when_the_call_never_left(sock: Path) -> None:
    """The server vanished before the call was sent: certainly not applied, so the
    caller gets CellUnavailable, not OutcomeUnknown."""
    async with trio.open_nursery() as nursery, running(nursery, sock, answer) as server:
        async with Synapse.grow("srv", socket_path=sock, give_up_after=0.2) as syn:
            assert await syn.fire(Inc(1)) == Total(1)
            assert server.scope is not None
            server.scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(CellUnavailable):
                await syn.fire(Inc(2))
        nursery.cancel_scope.cancel()


async def test_sessions_expired_session_first_copy_moves_to_a_new_session(sock: Path) -> None:
    """The server forgot the session before the first copy arrived: not applied, so the
    call is resent in a fresh session; the same on a resent copy is OutcomeUnknown."""

    async def forget_session_1(env: SessionCall, copy: int) -> Any:
        del copy
        if env.session == 1:
            return SessionFault(kind="expired", detail="forgotten")
        return Total(total=inner(env).n)

    async with trio.open_nursery() as nursery, running(nursery, sock, forget_session_1) as srv:
        async with Synapse.grow("srv", socket_path=sock) as syn:
            assert await syn.fire(Inc(4)) == Total(4)
        nursery.cancel_scope.cancel()
    assert [(e.session, e.seq) for e in srv.seen] == [(1, 1), (2, 1)]

    async def expire_on_resend(env: SessionCall, copy: int) -> Any:
        del env
        if copy == 0:
            await trio.sleep_forever()
        return SessionFault(kind="expired", detail="expired while you retried")

    async with trio.open_nursery() as nursery, running(nursery, sock, expire_on_resend):
        async with Synapse.grow("srv", socket_path=sock, retry_after=0.05) as syn:
            with pytest.raises(OutcomeUnknown):
                await syn.fire(Inc(4))
        nursery.cancel_scope.cancel()


async def test_sessions_remote_errors_are_final_answers(sock: Path) -> None:
    async def fail(env: SessionCall, copy: int) -> Any:
        del env, copy
        raise ValueError("no")

    async with trio.open_nursery() as nursery, running(nursery, sock, fail) as srv:
        async with Synapse.grow("srv", socket_path=sock) as syn:
            with pytest.raises(RemoteCellError):
                await syn.fire(Inc(1))
        nursery.cancel_scope.cancel()
    assert len(srv.seen) == 1  # never resent


SPEC_EXAMPLE = """
00 00 00 48 83 01 07 86 75 63 65 6c 6c 6d 65 73
68 2e 73 65 73 73 69 6f 6e 2e 43 61 6c 6c 01 01
01 70 38 64 64 39 37 32 62 37 66 32 61 34 32 32
35 64 58 18 85 6d 65 78 61 6d 70 6c 65 2e 50 6f
69 6e 74 03 23 61 70 82 61 61 61 62
"""


def test_sessions_spec_example_and_fingerprints_match_the_code() -> None:
    """docs/protocol.md section 17: the worked example and the fingerprint table."""
    from cellmesh.wire import codec
    from cellmesh.wire.proteins import EncodeContext

    inner = cbor2.dumps(["example.Point", 3, -4, "p", ["a", "b"]])
    env = SessionCall(session=1, seq=1, floor=1, fingerprint="8dd972b7f2a4225d", body=inner)
    frame = codec.frame_bytes([codec.Kind.CALL, 7, PROTEINS.encode(env, EncodeContext())])
    assert frame == bytes.fromhex(SPEC_EXAMPLE)
    assert {cls.__name__: fingerprint(cls) for cls in (
        OpenSession, SessionOpened, SessionCall, SessionFault, CloseSession
    )} == {
        "OpenSession": "fb560a258a385c07", "SessionOpened": "c0ea9c8e207ba02b",
        "SessionCall": "5bbcd41e425cddc3", "SessionFault": "46a314467e6c549a",
        "CloseSession": "cad20479c0b38782",
    }
