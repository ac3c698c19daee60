"""Fuzzing the root's control socket and a cell's umbilical (house rule 10, issue 10).

Invariant: whatever well-framed frames a local client (control socket) or a
cell (its umbilical) sends -- control proteins with fields of the wrong type,
huge values and unknown wire names, arbitrary CBOR items, frames of any kind
-- the root stays up: its background tasks contain no failure, and a
well-behaved client is served a ``StatusReply`` right after every example.
The root's descriptors stay bounded over the whole run.

One real root (host sandbox, one cell) runs in a thread of its own for the
module; every example is a plain blocking socket client, so hypothesis runs
synchronous examples. Deterministic: ``derandomize=True``.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import tempfile
import threading
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import cbor2
import pytest
import rootcells
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_root import cell

from cellmesh.actors.root import Root
from cellmesh.testing.mesh import open_root
from cellmesh.wire.codec import NEED_DATA, PROTOCOL_VERSION, FrameDecoder, Hello, frame_bytes
from cellmesh.wire.proteins import PROTEINS

pytestmark = pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs /proc")

FUZZ = settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)

#: Control proteins a fuzzer may send; StopMesh would (rightly) stop the root.
WIRE_NAMES = sorted(
    name for name in PROTEINS.fingerprints()
    if name.startswith("cellmesh.ctl.") and name != "cellmesh.ctl.StopMesh"
)


class LiveRoot:
    """A root serving in its own thread (and Trio run) until :meth:`stop`."""

    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="cm-", dir="/tmp"))
        shutil.copy(Path(rootcells.__file__), self.home / "rootcells.py")
        self.logs: list[str] = []
        self.root: Root | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)
        self._thread.start()
        if not self._ready.wait(60) or self.root is None:
            raise RuntimeError(f"the root did not start: {self.logs[-5:]}")

    async def _main(self) -> None:
        try:
            async with open_root(self.home, cell("echo", "Attacker"), log=self.logs.append) as root:
                self.root = root
                self._token = trio.lowlevel.current_trio_token()
                self._stop = trio.Event()
                self._ready.set()
                await self._stop.wait()
        finally:
            self._ready.set()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        if self._stop is not None and self._token is not None and self.alive:
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(60)
        shutil.rmtree(self.home, ignore_errors=True)

    @property
    def control(self) -> Path:
        return self.home / "run" / "mitosis.sock"

    @property
    def umbilical(self) -> Path:
        return self.home / "run" / ".umbilical" / "echo" / "mitosis.sock"


@pytest.fixture(scope="module")
def live_root() -> Iterator[LiveRoot]:
    live = LiveRoot()
    fds = len(os.listdir("/proc/self/fd"))
    try:
        yield live
        # Every fuzz connection came and went: nothing piled up.
        assert len(os.listdir("/proc/self/fd")) <= fds + 16
    finally:
        live.stop()


# ---------------------------------------------------------------- a raw client


class RawClient:
    """A blocking wire-protocol client that sends whatever it is given."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(20)
        self.sock.connect(str(path))
        self.decoder = FrameDecoder()
        hello = Hello(version=PROTOCOL_VERSION, name="fuzz", proteins={})
        self.sock.sendall(frame_bytes(hello.to_wire()))
        self.server_hello = self.next_items()

    def send(self, payload: bytes) -> bool:
        """Send raw bytes; False when the server has already closed."""
        try:
            self.sock.sendall(payload)
        except OSError:
            return False
        return True

    def next_items(self) -> list[list[Any]] | None:
        """The items of the next frame; None at end of stream or on a broken connection."""
        while True:
            try:
                frame = self.decoder.next_frame()
            except Exception:  # a frame our decoder refuses: treat as the end
                return None
            if frame is not NEED_DATA:
                return frame.items  # type: ignore[union-attr]
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                return None
            if not data:
                return None
            self.decoder.feed(data)

    def answer_to(self, call_id: int) -> tuple[str, Any] | None:
        """Read until the final answer to ``call_id``, or the end (None).

        ``("reply", wire_name)`` (a reply frame or a columns frame of
        replies) or ``("error", code)``.
        """
        while (items := self.next_items()) is not None:
            for item in items:
                if item[0] == 2 and item[1] == call_id:
                    return "reply", None if item[2] is None else item[2][0]
                if item[0] == 3 and item[1] == call_id:
                    return "error", item[2]
                if item[0] == 9 and item[1] == 2 and call_id in (item[4] or ()):
                    return "reply", item[3]
        return None

    def close(self) -> None:
        self.sock.close()


def framed(item: Any) -> bytes:
    payload = cbor2.dumps(item)
    return struct.pack(">I", len(payload)) + payload


def assert_serving(live: LiveRoot) -> None:
    """The root is up and a well-behaved client gets a StatusReply."""
    assert live.alive, live.logs[-10:]
    client = RawClient(live.control)
    try:
        client.send(framed([1, 1, ["cellmesh.ctl.StatusRequest"]]))
        answer = client.answer_to(1)
    finally:
        client.close()
    assert answer == ("reply", "cellmesh.ctl.StatusReply"), answer
    assert live.root is not None and live.root.contained_failures == 0, live.logs[-20:]


# ---------------------------------------------------------------- strategies

LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()  # beyond 64 bits: bignums
    | st.sampled_from([0, -1, 2**63 - 1, 2**64, -(2**64), 10**30])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.binary(max_size=40)
    | st.sampled_from(["x" * 100_000, "", "echo", "no-such-cell", "../x", "a..b", "\0"])
)
VALUES = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=4),
    max_leaves=20,
)
NAMES = st.sampled_from(["echo", "no-such-cell", "mitosis", "echo.a", "a..b", "x" * 100_000]) | (
    st.text(max_size=70)
)


def typed(hint: Any) -> st.SearchStrategy[Any]:
    """Well-typed wire values for a field of type ``hint`` (huge and odd ones included)."""
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        return st.one_of([typed(arg) for arg in typing.get_args(hint)])
    if origin is list:
        return st.lists(typed(typing.get_args(hint)[0]), max_size=3)
    if isinstance(hint, type) and attrs.has(hint):
        return well_typed(hint)
    return {
        str: NAMES,
        int: st.integers(min_value=-(2**63), max_value=2**64 - 1) | st.integers(),
        float: st.floats(),
        bool: st.booleans(),
        type(None): st.none(),
    }.get(hint, VALUES)


def well_typed(cls: type) -> st.SearchStrategy[list[Any]]:
    """A body of protein ``cls`` whose every field has its declared type."""
    hints = typing.get_type_hints(cls)
    fields = [typed(hints[f.name]) for f in attrs.fields(cls)]
    wire = next(n for n in PROTEINS.fingerprints() if PROTEINS.get(n) is cls)
    return st.tuples(*fields).map(lambda values: [wire, *values])


BODIES = st.one_of(
    st.tuples(
        st.sampled_from(WIRE_NAMES) | st.text(max_size=30), st.lists(VALUES, max_size=6)
    ).map(lambda t: [t[0], *t[1]]),
    st.sampled_from(WIRE_NAMES).flatmap(lambda name: well_typed(PROTEINS.get(name))),  # type: ignore[arg-type]
)
ITEMS = st.one_of(
    BODIES.map(lambda body: ("call", body)),
    BODIES.map(lambda body: ("signal", body)),
    st.lists(VALUES, min_size=1, max_size=6).map(lambda item: ("raw", item)),
    VALUES.map(lambda item: ("raw", item)),
)


def send_example(path: Path, items: list[tuple[str, Any]], *, probe: list[Any]) -> None:
    """Send ``items`` on one connection, then the call ``probe``; read until its answer."""
    client = RawClient(path)
    try:
        payload = b""
        for n, (kind, item) in enumerate(items, start=1):
            if kind == "call":
                payload += framed([1, n, item])
            elif kind == "signal":
                payload += framed([4, item])
            else:
                payload += framed(item)
        # Then one harmless call: its answer (or the server closing on us)
        # says the server got through everything before it.
        last = len(items) + 1
        payload += framed([1, last, probe])
        if client.send(payload):
            client.answer_to(last)
    finally:
        client.close()


# ---------------------------------------------------------------- the fuzz


@FUZZ
@given(items=st.lists(ITEMS, min_size=1, max_size=5))
def test_root_control_socket_fuzz_keeps_the_root_serving(
    live_root: LiveRoot, items: list[tuple[str, Any]]
) -> None:
    send_example(live_root.control, items, probe=["cellmesh.ctl.StatusRequest"])
    assert_serving(live_root)


@FUZZ
@given(items=st.lists(ITEMS, min_size=1, max_size=5))
def test_root_umbilical_fuzz_keeps_the_root_serving(
    live_root: LiveRoot, items: list[tuple[str, Any]]
) -> None:
    send_example(live_root.umbilical, items, probe=["cellmesh.ctl.Demonitor", 0])
    assert_serving(live_root)
