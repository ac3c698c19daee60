"""Client sessions (docs/protocol.md section 17): a synapse talking to a server that
announces sessions wraps calls in envelopes and resends them, transparently to ``fire``.

The servers here are scripted membranes (no Raft): they see every envelope, so the tests
check what travels on the wire and what the caller sees when the server breaks, stalls,
forgets a session, never comes back or answers with a frame the client refuses (a raw
cell sends the frames a membrane never would, to every client: Trio, asyncio, blocking).
"""

from __future__ import annotations

import asyncio
import socket
import struct
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
from cellmesh import OutcomeUnknown, Receptors, Synapse, aio, open_membrane
from cellmesh.errors import CellUnavailable, ErrorCode, RemoteCellError, ReplyRefused
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


# -- a reply this client refuses ----------------------------------------------------


@cellmesh.protein("t.session.Ops")
class Ops:
    """A reply whose map alone is over the client's decode budget (docs/protocol.md 3.1:
    48 bytes per declared entry, against 4 MiB plus 40 per byte read so far)."""

    ops: dict[str, int]


@cellmesh.protein("t.session.Dump")
class Dump:
    pass


#: Entries enough to be refused (about 87,400 pass) in a frame of about 0.6 MB, far
#: below the 16 MiB frame limit.
REFUSED_ENTRIES = 90_000


def refused_reply() -> Ops:
    return Ops(ops={str(i): i for i in range(REFUSED_ENTRIES)})


async def huge(env: SessionCall, copy: int) -> Ops:
    del env, copy
    return refused_reply()


async def test_sessions_a_refused_reply_is_raised_at_once_never_resent(sock: Path) -> None:
    """An answer the client's own decode budget refuses is not a lost connection: the
    call fails at once with ReplyRefused naming the cause (it was OutcomeUnknown "no
    answer after retrying", after give_up_after, the reply resent by the server on
    every retry). The session goes on: the next call is answered."""
    async with trio.open_nursery() as nursery, running(nursery, sock, huge) as server:
        async with Synapse.grow("srv", socket_path=sock, retry_after=0.5,
                                give_up_after=1.0) as syn:
            with pytest.raises(ReplyRefused) as info:
                await syn.fire(Inc(1))
            refused = info.value
            assert refused.cell == "srv"
            assert refused.in_flight == 1
            assert refused.code == ErrorCode.MALFORMED_FRAME
            assert "decode budget" in refused.reason
            text = str(refused)
            assert text.startswith(f"the reply of cell 'srv' was refused by this client: "
                                   f"{refused.reason}; ")
            assert "for a command it may have taken effect" in text
            assert "for a query it simply failed" in text
            assert isinstance(refused, cellmesh.ProtocolError)
            assert not isinstance(refused, (OutcomeUnknown, CellUnavailable))
            assert len(server.seen) == 1  # never resent
            server.on_call = answer
            assert await syn.fire(Inc(2)) == Total(2)  # a new connection, the same session
        nursery.cancel_scope.cancel()
    assert [(e.session, e.seq) for e in server.seen] == [(1, 1), (1, 2)]


async def test_sessions_a_refused_reply_fails_every_call_in_flight_on_its_connection(
    sock: Path,
) -> None:
    """The refused frame is never decoded, so the client cannot tell whose answers it
    held: every call in flight on that connection gets ReplyRefused (``in_flight``
    counts them, the message says so), none is resent."""
    release = trio.Event()

    async def hold_or_huge(env: SessionCall, copy: int) -> Any:
        del copy
        if inner(env).n == 0:
            await release.wait()
            return Total(total=0)
        return refused_reply()

    async with trio.open_nursery() as nursery, running(nursery, sock, hold_or_huge) as server:
        async with Synapse.grow("srv", socket_path=sock, retry_after=0.5,
                                give_up_after=1.0) as syn:
            held: list[BaseException] = []

            async def call_held() -> None:
                try:
                    await syn.fire(Inc(0))
                except ReplyRefused as exc:
                    held.append(exc)

            nursery.start_soon(call_held)
            while len(server.seen) < 1:
                await trio.sleep(0.001)  # the held call is in flight
            with pytest.raises(ReplyRefused) as info:
                await syn.fire(Inc(1))
            while not held:
                await trio.sleep(0.001)
            for refused in (info.value, held[0]):
                assert refused.in_flight == 2
                assert "with 2 calls in flight, this one among them" in str(refused)
                assert "a command may have taken effect" in str(refused)
            release.set()
            assert len(server.seen) == 2  # neither was resent
        nursery.cancel_scope.cancel()


# A raw cell (struct + cbor2) for what the reference membrane never sends.
_HELLO, _CALL, _REPLY, _ERROR = 0, 1, 2, 3


def _frame(obj: Any) -> bytes:
    payload = cbor2.dumps(obj)
    return struct.pack(">I", len(payload)) + payload


#: What the raw cell answers a call with, what the client's error says, its code.
REFUSALS = {
    "over the decode budget": (
        lambda call_id: _frame([_REPLY, call_id, ["t.session.Ops", {
            str(i): i for i in range(REFUSED_ENTRIES)}]]),
        "decode budget", ErrorCode.MALFORMED_FRAME),
    "over the frame limit": (
        lambda call_id: struct.pack(">I", (16 << 20) + 1),
        "exceeds the 16777216-byte limit", ErrorCode.FRAME_TOO_LARGE),
    "malformed": (
        lambda call_id: struct.pack(">I", 1) + b"\xff",
        "CBOR head 0xff at byte 0", ErrorCode.MALFORMED_FRAME),
}


async def _raw_frames(stream: trio.SocketStream) -> AsyncIterator[Any]:
    """The client's frames, decoded, until it closes."""
    buf = b""
    while True:
        while len(buf) < 4 or len(buf) < 4 + struct.unpack(">I", buf[:4])[0]:
            chunk = await stream.receive_some()
            if not chunk:
                return
            buf += chunk
        (n,) = struct.unpack(">I", buf[:4])
        yield cbor2.loads(buf[4 : 4 + n])
        buf = buf[4 + n :]


@attrs.define(eq=False)
class RawCell:
    """Answers a session request, and any other call with ``bad`` bytes."""

    sessions: bool
    bad: Callable[[int], bytes]
    connections: int = 0
    calls: int = 0
    told: list[list[Any]] = attrs.Factory(list)  # the error frames the client sent

    async def serve(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        fps = {"cellmesh.session.Opened": fingerprint(SessionOpened)}
        opts: dict[str, Any] = {"max_frame_size": 1 << 20, "credit_calls": 16,
                                "credit_bytes": 1 << 20}
        if self.sessions:
            opts["sessions"] = True
        frames = _raw_frames(stream)
        await frames.__anext__()  # the client's hello
        await stream.send_all(_frame([_HELLO, 1, "raw", fps, opts]))
        async for got in frames:
            if got[0] == _ERROR:
                self.told.append(got)
            elif got[0] == _CALL and got[2][0] == "cellmesh.session.Open":
                await stream.send_all(_frame([_REPLY, got[1], ["cellmesh.session.Opened", 1]]))
            elif got[0] == _CALL:
                self.calls += 1
                await stream.send_all(self.bad(got[1]))


def _fire_aio(path: Path) -> BaseException:
    async def main() -> BaseException:
        async with aio.Synapse.grow("raw", socket_path=path) as syn:
            try:
                await syn.fire(Dump())
            except Exception as exc:
                return exc
        raise AssertionError("the call succeeded")

    return asyncio.run(main())


def _fire_blocking(path: Path) -> BaseException:
    with cellmesh.connect("raw", socket_path=path) as syn:
        try:
            syn.fire(Dump(), timeout=10)
        except Exception as exc:
            return exc
    raise AssertionError("the call succeeded")


@pytest.mark.parametrize("sessions", [True, False], ids=["replicated", "plain"])
@pytest.mark.parametrize("case", list(REFUSALS))
@pytest.mark.parametrize("client", ["trio", "asyncio", "blocking"])
async def test_sessions_a_refused_reply_is_reported_the_same_way_by_every_client(
    sock: Path, client: str, case: str, sessions: bool
) -> None:
    """A cell that announces sessions: ReplyRefused at once from every client (the
    asyncio and blocking ones raised OutcomeUnknown, the Trio synapse resent until
    give_up_after), the cause named, the code the one the client told the cell. A
    plain cell: CellUnavailable naming the cause, as for any connection the cell broke."""
    bad, cause, code = REFUSALS[case]
    cell = RawCell(sessions, bad)
    listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await listener.bind(str(sock))
    listener.listen()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, cell.serve, [trio.SocketListener(listener)])
        with trio.fail_after(10):
            if client == "trio":
                async with Synapse.grow("raw", socket_path=sock, retry_after=0.5,
                                        give_up_after=1.0) as syn:
                    with pytest.raises(cellmesh.CellmeshError) as info:
                        await syn.fire(Dump())
                    raised: BaseException = info.value
            else:
                run = _fire_aio if client == "asyncio" else _fire_blocking
                raised = await trio.to_thread.run_sync(run, sock)
            while not cell.told:
                await trio.sleep(0.001)  # the client's error frame is on its way
        nursery.cancel_scope.cancel()
    assert cell.told[0][1:3] == [None, code]  # the client said what the cell did wrong
    if sessions:
        assert isinstance(raised, ReplyRefused), raised
        assert (raised.cell, raised.code, raised.in_flight) == ("raw", code, 1)
        assert cause in raised.reason
        assert "for a command it may have taken effect" in str(raised)
        assert (cell.connections, cell.calls) == (1, 1)  # never resent
    else:
        assert type(raised) is CellUnavailable, raised
        assert cause in raised.reason and raised.reason == cell.told[0][4]


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
