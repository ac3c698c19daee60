"""Membrane: the server side of a cell, serving proteins on a Unix socket.

Theory of operation
-------------------
A :class:`Membrane` listens on ``$CELL_SOCKET_DIR/<name>.sock`` (or on a
listening socket handed to it, for socket activation) and serves each
connection with a :class:`ServerConnection`.

Per connection there is always exactly one *reader*: the task that receives
bytes, decodes frames and starts handlers. A handler runs inline in the
reader (see :mod:`cellmesh.transport._dispatch`); if it completes without suspending,
its reply is queued and the reader moves on. If it suspends, the reader task
*becomes the owner* of that call (its per-task cancel scope is now the call's
scope, so a ``cancel`` frame cancels exactly that handler), and a fresh task
takes over as reader. The calls already received behind it do not wait for
that reader (which runs a scheduler pass later, and would hand over again at
the next handler that suspends: one call per pass): a *starter* task is
spawned for each of them at once (within ``max_concurrency``); they all run
in the next pass, each taking the next call, so calls still start in arrival
order, and each starter owns the call it started if that suspends. A task
whose role is done (its owned call answered) does not end: it waits as a
*spare* (at most ``max_concurrency`` per connection, all released once the
idle watch finds the connection quiet), and the next role -- reader, starter,
owner of a call that waited for a slot -- goes to a spare before any new
task: waking one costs a third of spawning one, and the spare keeps its
cancel scope (a fresh scope costs as much again). A task whose scope caught
a cancel frame's cancellation ends, so a scope serves once. Replies
are flushed as one batch frame whenever the reader has consumed everything
received so far, and earlier while it works through many calls: once half
of what one read brought is handled, and before each further frame's work,
so the client works on the first answers
while the cell handles the rest (a pipeline, not a lockstep).

Flow control: the membrane grants the peer credit in its hello (calls and
bytes) and returns it as calls finish; a peer that exceeds its credit is
cut off with a protocol error. At most ``max_concurrency`` handlers may be
suspended at once per connection; further calls wait in arrival order (their
number is bounded by the credit), while the reader keeps reading so cancels
still get through.

Failure isolation: a protocol error on one connection sends an ``error``
frame to that connection and closes it; nothing else notices. A handler
exception becomes an error reply; the cell keeps serving.

Bounds (docs/security.md, "Denial of service"): at most ``max_connections``
connections are served at once -- one more is accepted, sent an error frame
with ``CONNECTION_LIMIT`` in place of the hello and closed; the connections
share an :class:`~cellmesh.transport._channel.FdBudget` of ``max_held_fds``
received descriptors that no frame has claimed yet; each connection has a
hello deadline, an idle timeout and the per-connection bounds of
:class:`~cellmesh.transport._options.MembraneOptions`.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, NoReturn

import attrs
import trio

from .._util import open_service_nursery
from ..config import MAX_SOCKET_PATH, Paths, check_cell_name
from ..errors import (
    ConfigError,
    ErrorCode,
)
from ..wire import codec
from ..wire.codec import (
    Error,
    GoAway,
)
from ..wire.proteins import (
    PROTEINS,
    ProteinRegistry,
)
from ..wire.vesicle import MappedBudget
from ._dispatch import Handler
from ._fds import FdBudget
from ._flusher import Flusher
from ._options import MembraneOptions, MembraneStats
from ._server_conn import ServerConnection
from ._sockets import adopt_listener, bind_unix_listener


class Membrane:
    """A cell's server: serves a handler on a Unix socket until closed.

    Build one with :func:`open_membrane` (an async context manager) or serve
    forever with :meth:`Membrane.bind`.
    """

    def __init__(
        self,
        name: str,
        handler: Handler,
        listener: socket.socket,
        *,
        socket_path: Path | None,
        registry: ProteinRegistry,
        options: MembraneOptions,
        log: Callable[[str], None] | None,
        accept_filter: Callable[[socket.socket], str | None] | None = None,
        on_handler_error: Callable[[BaseException], None] | None = None,
        accept_gate: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.name = name
        self._accept_filter = accept_filter
        self._accept_gate = accept_gate
        self.on_handler_error = on_handler_error
        self.handler = handler
        self.socket_path = socket_path
        self.registry = registry
        self.options = options
        self.stats = MembraneStats()
        self.fd_budget = FdBudget(options.max_held_fds)
        self.mapped = MappedBudget(options.max_mapped_bytes, options.max_mapped_vesicles)
        self._listener = listener
        self._log_fn = log
        self._connections: set[ServerConnection] = set()
        self._closing = False
        self._suspended = False
        self._nursery: trio.Nursery | None = None
        self._accept_scope: trio.CancelScope | None = None
        self._bound_inode: tuple[int, int] | None = None

    def log(self, text: str) -> None:
        """Report an event through the log callback given to open_membrane (if any)."""
        if self._log_fn is not None:
            self._log_fn(f"membrane {self.name}: {text}")

    @classmethod
    async def bind(
        cls,
        name: str,
        handler: Handler,
        *,
        socket_dir: str | os.PathLike[str] | None = None,
        listen_fd: int | None = None,
        registry: ProteinRegistry | None = None,
        task_status: trio.TaskStatus[Membrane] = trio.TASK_STATUS_IGNORED,
        **options: Any,
    ) -> NoReturn:
        """Serve ``handler`` as cell ``name`` forever (until cancelled).

        ``task_status`` lets ``nursery.start(Membrane.bind, ...)`` return the
        membrane once it is listening.
        """
        async with open_membrane(
            name, handler, socket_dir=socket_dir, listen_fd=listen_fd,
            registry=registry, **options,
        ) as membrane:
            task_status.started(membrane)
            await trio.sleep_forever()
        raise AssertionError("unreachable")

    @property
    def listener(self) -> socket.socket:
        """The listening socket (owned by whoever created it)."""
        return self._listener

    async def _accept_loop(self, nursery: trio.Nursery) -> None:
        listener = self._listener
        gate = self._accept_gate
        while True:
            if gate is not None:
                await gate()
            try:
                sock, _ = listener.accept()
            except BlockingIOError:
                await trio.lowlevel.wait_readable(listener)
                continue
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    failures = self.stats.accept_failures = self.stats.accept_failures + 1
                    if failures in (1, 10, 100) or not failures % 1000:  # (20 a second)
                        self.log(f"accept failed ({exc}); retrying ({failures} failed so far)")
                    await trio.sleep(0.05)
                    continue
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue
                raise
            if self._accept_filter is not None:
                refusal = self._accept_filter(sock)
                if refusal is not None:
                    self.log(f"refused a connection: {refusal}")
                    sock.close()
                    continue
            if len(self._connections) >= self.options.max_connections:
                self._refuse_over_limit(sock)
                continue
            conn = ServerConnection(self, sock)
            self._connections.add(conn)
            nursery.start_soon(self._serve, conn)

    def _refuse_over_limit(self, sock: socket.socket) -> None:
        """Tell a connection past ``max_connections`` why it is refused, and close it.

        The error frame takes the place of our hello (docs/protocol.md 5.1);
        it is written without waiting: a new socket's buffer has room for it.
        """
        self.stats.refused += 1
        limit = self.options.max_connections
        error = Error(
            id=None, code=ErrorCode.CONNECTION_LIMIT, type_name="ConnectionLimit",
            message=f"membrane {self.name} already serves {limit} connections (its "
            "max_connections); try again later",
        )
        with suppress(OSError):
            sock.setblocking(False)
            sock.send(codec.frame_bytes(error.to_wire()))
        sock.close()
        if self.stats.refused in (1, 10, 100) or not self.stats.refused % 1000:
            self.log(f"refused a connection: {limit} connections already served "
                     f"({self.stats.refused} refused so far)")

    async def _serve(self, conn: ServerConnection) -> None:
        try:
            await conn.serve()
        finally:
            self._connections.discard(conn)

    def goaway(self, reason: str) -> list[ServerConnection]:
        """Ask every current connection to move: goaway, calls in flight still finish.

        The membrane keeps listening; clients open new connections for new
        work (a replica that stops leading sends this so its clients move to
        the new leader; :meth:`drain` and :meth:`suspend` send it too).
        Returns the connections asked.
        """
        goaway = codec.frame_bytes(GoAway(ErrorCode.SHUTTING_DOWN, reason).to_wire())
        conns = list(self._connections)
        for conn in conns:
            # The peer sends no new calls after the goaway and closes once its
            # calls are answered; until then everything that arrives is served,
            # so no call that crossed the goaway is lost.
            conn.send_goaway(goaway)
        return conns

    def _goaway_all(self) -> list[ServerConnection]:
        return self.goaway("shutting down")

    async def drain(self, grace: float = 10.0) -> None:
        """Graceful shutdown of connections: send goaway, let in-flight calls finish.

        Connections still busy after ``grace`` seconds are closed.
        """
        self._closing = True
        conns = self.goaway("shutting down")
        with trio.move_on_after(grace):
            for conn in conns:
                await conn.done.wait()

    # -- suspend / resume (hot swap) ------------------------------------------

    def _start_accepting(self) -> None:
        assert self._nursery is not None
        scope = trio.CancelScope()
        self._accept_scope = scope

        async def accept(nursery: trio.Nursery) -> None:
            with scope:
                await self._accept_loop(nursery)

        self._nursery.start_soon(accept, self._nursery)

    def _stop_accepting(self) -> None:
        if self._accept_scope is not None:
            self._accept_scope.cancel()
            self._accept_scope = None

    @property
    def suspended(self) -> bool:
        """True between :meth:`suspend` and :meth:`resume`."""
        return self._suspended

    async def suspend(self, grace: float) -> bool:
        """Stop accepting and drain every connection, keeping the listening socket.

        New connections wait in the listen backlog meanwhile (the socket stays
        open: whoever else holds it -- the next version of the cell -- may
        accept them). Every open connection gets goaway; the method returns
        once all of them have closed (their calls answered), or after
        ``grace`` seconds. Then connections that are still open but have no
        call in flight are closed (their peer ignored the goaway; protocol
        section 9 allows it after the grace period) and the result is True;
        it is False when calls are still running (nothing is closed: call
        :meth:`resume` to serve on, or leave the block to close).
        """
        self._suspended = True
        self._stop_accepting()
        conns = self._goaway_all()
        with trio.move_on_after(grace):
            for conn in conns:
                await conn.done.wait()
        left = [c for c in conns if not c.done.is_set()]
        if any(c.busy for c in left):
            return False
        for conn in left:
            conn.channel.close()
            conn.done.set()
        return True

    def resume(self) -> None:
        """Accept connections again after :meth:`suspend` (drained ones stay drained)."""
        if self._suspended and not self._closing:
            self._suspended = False
            self._start_accepting()


def membrane_options(options: dict[str, Any]) -> MembraneOptions:
    """Validated :class:`MembraneOptions` from keyword options (ConfigError names a bad one)."""
    known = attrs.fields_dict(MembraneOptions)
    for key in options:
        if key not in known:
            raise ConfigError(key, f"is not a membrane option (known: {', '.join(sorted(known))})")
    opts = MembraneOptions(**options)
    opts.validate()
    return opts


@asynccontextmanager
async def open_membrane(
    name: str,
    handler: Handler,
    *,
    socket_dir: str | os.PathLike[str] | None = None,
    socket_path: str | os.PathLike[str] | None = None,
    listen_fd: int | None = None,
    registry: ProteinRegistry | None = None,
    log: Callable[[str], None] | None = None,
    drain_grace: float = 10.0,
    accept_filter: Callable[[socket.socket], str | None] | None = None,
    socket_mode: int = 0o600,
    on_handler_error: Callable[[BaseException], None] | None = None,
    accept_gate: Callable[[], Awaitable[None]] | None = None,
    **options: Any,
) -> AsyncIterator[Membrane]:
    """Serve ``handler`` as cell ``name`` for the duration of the block.

    Listens on ``<socket_dir>/<name>.sock`` (default ``$CELL_SOCKET_DIR``,
    created 0700), on ``socket_path`` when given (its directory is created
    0700 too), or on the already-listening socket ``listen_fd`` when the
    root hands one over (then no file is created or removed here). On exit the
    membrane drains: goaway to every connection, in-flight calls finish
    (up to ``drain_grace`` seconds), then the socket file is removed. When
    the block is left by an exception or a cancellation, connections are
    closed at once instead (in-flight callers get ``CellUnavailable``).
    ``accept_filter(sock)`` runs on every accepted socket before the hello: a
    returned string refuses (closes) the connection and is logged as the
    reason (the root checks ``SO_PEERCRED`` this way). ``socket_mode`` is the
    mode of a socket file created here. ``on_handler_error(exc)`` sees every
    exception a handler raised, before it is boxed into the error reply (only
    on that path: successful calls never pay for it). ``accept_gate()``, when
    given, is awaited before each accept: connections wait in the listen
    backlog until it returns (a replica accepts only while it leads).
    ``options`` are :class:`MembraneOptions` fields.
    """
    check_cell_name(name)
    opts = membrane_options(options)
    if not callable(handler):
        raise ConfigError("handler", f"must be an async callable, got {handler!r}")
    Flusher.current()  # a bad CELL_SPIN_US fails the start, not the first connection
    path: Path | None = None
    if listen_fd is not None:
        listener = adopt_listener(listen_fd)
    else:
        if socket_path is not None:
            path = Path(socket_path)
            if len(os.fsencode(path)) > MAX_SOCKET_PATH:
                raise ConfigError("socket_path", f"{str(path)!r} is longer than "
                                  f"{MAX_SOCKET_PATH} bytes (the Unix socket limit)")
        else:
            paths = Paths.from_env()
            if socket_dir is not None:
                paths = attrs.evolve(paths, socket_dir=Path(socket_dir))
            path = paths.socket_path(name)
        listener = bind_unix_listener(path, mode=socket_mode)
    listener.setblocking(False)
    st = os.stat(path) if path is not None else None
    membrane = Membrane(
        name, handler, listener, socket_path=path,
        registry=registry if registry is not None else PROTEINS, options=opts, log=log,
        accept_filter=accept_filter, on_handler_error=on_handler_error,
        accept_gate=accept_gate,
    )
    try:
        async with open_service_nursery() as nursery:
            membrane._nursery = nursery
            membrane._start_accepting()
            try:
                yield membrane
            except BaseException:
                # Cancelled or failing: close at once (callers get
                # CellUnavailable); only a normal exit drains gracefully.
                membrane._stop_accepting()
                nursery.cancel_scope.cancel()
                raise
            else:
                membrane._stop_accepting()
                with trio.CancelScope(shield=True):
                    await membrane.drain(drain_grace)
                nursery.cancel_scope.cancel()
    finally:
        if path is not None and st is not None:
            with suppress(OSError):
                now = os.stat(path)
                if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
                    os.unlink(path)
            listener.close()
        else:
            listener.detach()  # the fd belongs to whoever handed it to us
