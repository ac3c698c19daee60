"""The byte relay of network grants, and the in-sandbox shim that runs it.

Standard library only, so it can run inside a sandbox as a plain script
(``python -I -S .../_netshim.py``: no site, no cellmesh import -- about 15 ms
instead of the ~300 ms that importing the package costs).

Theory of operation. A :class:`Switchboard` is one selector loop that
accepts on listening sockets and splices *pairs* of sockets: bytes read from
one side are written to the other, each direction buffered up to
:data:`HIGH_WATER` bytes (a full buffer stops reading that side: back
pressure, no unbounded memory). An end of stream is passed on as
``shutdown(SHUT_WR)`` once its direction is drained, so half-closed
protocols work; a pair is closed when both directions have ended, and
aborted (both sides closed at once, TCP sides with a reset) on any socket
error. The number of live pairs plus reserved slots (connections still
being set up) is bounded by ``max_pairs``: a connection accepted beyond it
is reset at once.

The host-side proxy (:mod:`cellmesh.sandbox._net`) pairs each Unix
connection from a cell with a fresh TCP connection to the granted
destination and then sends one status byte (:data:`STATUS_OK`) down the Unix
side before any destination byte. The shim pairs each TCP connection the
workload opens to a loopback listener with a Unix connection to the proxy
and *expects* that status byte: if the Unix side ends without it (the
destination refused, or the proxy's bound was reached) the workload's TCP
connection is reset, so a failed destination is an error, not an empty
stream.

As the sandbox's command, :func:`main` binds every listener, double-forks the
forwarder (it is re-parented to the sandbox's init, so the workload never
sees an unexpected child) and then ``exec``\\ s the workload in its own pid:
signals and the exit status stay the workload's. The forwarder ignores
SIGTERM/SIGINT/SIGHUP (a graceful stop of the workload keeps its
connections) and exits when the workload does: it watches a pidfd of the
workload (and the sandbox's pid namespace would kill it anyway).
"""

from __future__ import annotations

import collections
import os
import selectors
import signal
import socket
import struct
import sys
import threading
from collections.abc import Callable, Sequence

# ``typing`` (4 ms) and ``contextlib`` (2 ms, it imports ``re``) are not
# imported at run time: every sandbox spawn with grants pays this module's
# start-up. Annotations are never evaluated (``from __future__``).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

#: The proxy's "destination connected" byte, sent before any destination byte.
STATUS_OK: Final = b"\x01"
#: Most bytes buffered per direction of a pair before reading that side pauses.
HIGH_WATER: Final = 256 << 10
#: Default bound on concurrently relayed connections.
DEFAULT_MAX_PAIRS: Final = 64
_CHUNK: Final = 64 << 10
_LINGER_RESET: Final = struct.pack("ii", 1, 0)

Accept = Callable[[socket.socket], None]


class _Pipe:
    """One direction of a pair: ``src`` -> ``dst`` through ``buf``."""

    __slots__ = ("buf", "dst", "eof", "expect_status", "shut", "src")

    def __init__(self, src: socket.socket, dst: socket.socket, prefix: bytes, status: bool) -> None:
        self.src = src
        self.dst = dst
        self.buf = bytearray(prefix)
        self.eof = False
        self.shut = False
        self.expect_status = status


class _Pair:
    __slots__ = ("a", "ab", "b", "ba", "masks")

    def __init__(self, a: socket.socket, b: socket.socket, b_prefix: bytes, status: bool) -> None:
        self.a = a
        self.b = b
        self.ab = _Pipe(a, b, b"", False)
        self.ba = _Pipe(b, a, b_prefix, status)
        self.masks: dict[socket.socket, int] = {a: 0, b: 0}

    def reading(self, sock: socket.socket) -> _Pipe:
        return self.ab if sock is self.a else self.ba

    def writing(self, sock: socket.socket) -> _Pipe:
        return self.ba if sock is self.a else self.ab


def reset_close(sock: socket.socket) -> None:
    """Close ``sock``; a TCP socket with a reset (SO_LINGER 0) instead of a FIN."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        except OSError:
            sock.close()  # the peer is gone already: a plain close is all that is left
            return
    sock.close()


class Switchboard:
    """A selector loop that accepts on listeners and splices socket pairs (see module doc).

    Every method except :meth:`call_soon` and :meth:`stop` must be called on
    the loop's thread (from a callback); those two are thread-safe.
    """

    def __init__(self, max_pairs: int = DEFAULT_MAX_PAIRS) -> None:
        self.max_pairs = max_pairs
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._calls: collections.deque[Callable[[], None]] = collections.deque()
        self._stopping = False
        self._closed = False
        self._listeners: dict[socket.socket, Accept] = {}
        self._pairs: set[_Pair] = set()
        self._reserved = 0
        self._stop_fd: int | None = None

    # ------------------------------------------------------------ thread-safe

    def call_soon(self, fn: Callable[[], None]) -> bool:
        """Run ``fn`` on the loop's thread; False (not run) once the loop has stopped."""
        with self._lock:
            if self._stopping or self._closed:
                return False
            self._calls.append(fn)
            self._wake()
        return True

    def stop(self) -> None:
        """Make :meth:`run` return (closing everything it holds)."""
        with self._lock:
            if self._stopping or self._closed:
                return
            self._stopping = True
            self._wake()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except BlockingIOError:
            return  # a wake-up is already pending

    # ------------------------------------------------------------ loop thread

    def stop_when_readable(self, fd: int) -> None:
        """Stop the loop once ``fd`` is readable (e.g. a pidfd: its process exited)."""
        self._sel.register(fd, selectors.EVENT_READ, None)
        self._stop_fd = fd

    def listen(self, sock: socket.socket, on_accept: Accept) -> None:
        """Accept on ``sock``; each accepted connection goes to ``on_accept`` (or is reset
        when the bound is reached)."""
        sock.setblocking(False)
        self._listeners[sock] = on_accept
        self._sel.register(sock, selectors.EVENT_READ, None)

    def in_use(self) -> int:
        """Live pairs plus reserved slots."""
        return len(self._pairs) + self._reserved

    def reserve(self) -> None:
        """Count a connection still being set up against the bound."""
        self._reserved += 1

    def release(self) -> None:
        """Undo one :meth:`reserve`."""
        self._reserved -= 1

    def add_pair(
        self,
        a: socket.socket,
        b: socket.socket,
        *,
        b_prefix: bytes = b"",
        expect_status: bool = False,
    ) -> None:
        """Splice ``a`` and ``b``. ``b_prefix`` is sent to ``a`` first; with
        ``expect_status`` the first byte from ``b`` must be :data:`STATUS_OK` (it is
        consumed), else ``a`` is reset."""
        a.setblocking(False)
        b.setblocking(False)
        pair = _Pair(a, b, b_prefix, expect_status)
        self._pairs.add(pair)
        self._service(pair)

    def run(self) -> None:
        """Serve until :meth:`stop`; then close every listener, pair and internal socket."""
        try:
            while not self._stopping:
                for key, mask in self._sel.select():
                    if key.fileobj is self._wake_r:
                        self._drain_calls()
                        continue
                    if key.fileobj == self._stop_fd and self._stop_fd is not None:
                        self._stopping = True
                        break
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock in self._listeners:
                        self._accept(sock)
                    elif isinstance(key.data, _Pair) and key.data in self._pairs:
                        self._on_ready(key.data, sock, mask)
        finally:
            self._close_all()

    # --------------------------------------------------------------- internals

    def _drain_calls(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        while True:
            with self._lock:
                if not self._calls:
                    return
                fn = self._calls.popleft()
            fn()

    def _accept(self, listener: socket.socket) -> None:
        for _ in range(64):
            try:
                conn, _addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. ECONNABORTED, EMFILE: the peer is dropped, we keep serving
            if self.in_use() >= self.max_pairs:
                reset_close(conn)
                continue
            self._listeners[listener](conn)

    def _on_ready(self, pair: _Pair, sock: socket.socket, mask: int) -> None:
        try:
            if mask & selectors.EVENT_READ:
                self._read(pair, pair.reading(sock))
            if mask & selectors.EVENT_WRITE:
                self._write(pair.writing(sock))
        except OSError:
            self._abort(pair)
            return
        self._service(pair)

    def _read(self, pair: _Pair, pipe: _Pipe) -> None:
        try:
            data = pipe.src.recv(_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        if not data:
            pipe.eof = True
            return
        if pipe.expect_status:
            if data[:1] != STATUS_OK:
                raise ConnectionError("the proxy sent no status byte")
            pipe.expect_status = False
            data = data[1:]
        pipe.buf += data
        self._write(pipe)

    @staticmethod
    def _write(pipe: _Pipe) -> None:
        if not pipe.buf:
            return
        try:
            sent = pipe.dst.send(pipe.buf)
        except (BlockingIOError, InterruptedError):
            return
        del pipe.buf[:sent]

    def _service(self, pair: _Pair) -> None:
        """Pass on ends of stream, close a finished pair, else update the selector."""
        try:
            for pipe in (pair.ab, pair.ba):
                if pipe.eof and pipe.expect_status:
                    raise ConnectionError("the proxy closed before its status byte")
                if pipe.eof and not pipe.buf and not pipe.shut:
                    pipe.shut = True
                    pipe.dst.shutdown(socket.SHUT_WR)
        except OSError:
            self._abort(pair)
            return
        if pair.ab.shut and pair.ba.shut:
            self._drop(pair, reset=False)
            return
        for sock in (pair.a, pair.b):
            out, inn = pair.reading(sock), pair.writing(sock)
            mask = 0
            if not out.eof and len(out.buf) < HIGH_WATER:
                mask |= selectors.EVENT_READ
            if inn.buf:
                mask |= selectors.EVENT_WRITE
            old = pair.masks[sock]
            if mask == old:
                continue
            if old == 0:
                self._sel.register(sock, mask, pair)
            elif mask == 0:
                self._sel.unregister(sock)
            else:
                self._sel.modify(sock, mask, pair)
            pair.masks[sock] = mask

    def _abort(self, pair: _Pair) -> None:
        self._drop(pair, reset=True)

    def _drop(self, pair: _Pair, *, reset: bool) -> None:
        self._pairs.discard(pair)
        for sock in (pair.a, pair.b):
            if pair.masks[sock]:
                self._sel.unregister(sock)
                pair.masks[sock] = 0
            if reset:
                reset_close(sock)
            else:
                sock.close()

    def _close_all(self) -> None:
        with self._lock:
            self._closed = True
            self._calls.clear()
        for pair in list(self._pairs):
            self._drop(pair, reset=True)
        for listener in self._listeners:
            listener.close()
        self._listeners.clear()
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()


# ----------------------------------------------------------------- the shim


def _parse(argv: Sequence[str]) -> tuple[list[tuple[str, int, str]], list[str]]:
    """``--map ADDR:PORT=SOCKET ... -- CMD ...`` -> (routes, workload argv)."""
    routes: list[tuple[str, int, str]] = []
    args = list(argv)
    while args and args[0] == "--map" and len(args) >= 2:
        spec = args[1]
        del args[:2]
        where, _, path = spec.partition("=")
        addr, _, port = where.rpartition(":")
        routes.append((addr, int(port), path))
    if not args or args[0] != "--" or len(args) < 2:
        raise SystemExit("usage: _netshim.py [--map ADDR:PORT=SOCKET]... -- CMD [ARG]...")
    return routes, args[1:]


def _bind(routes: Sequence[tuple[str, int, str]]) -> list[tuple[socket.socket, str]]:
    out: list[tuple[socket.socket, str]] = []
    for addr, port, path in routes:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((addr, port))
        sock.listen(128)
        out.append((sock, path))
    return out


def _forward(board: Switchboard, path: str) -> Accept:
    def on_accept(conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        up.setblocking(False)
        try:
            up.connect(path)  # a Unix connect never stays in progress
        except OSError:
            up.close()
            reset_close(conn)
            return
        board.add_pair(conn, up, expect_status=True)

    return on_accept


def _serve(listeners: Sequence[tuple[socket.socket, str]], workload: int) -> None:
    """The forwarder's body (in the grandchild): close what is not ours, relay until
    the ``workload`` pidfd says it exited."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    keep = sorted({0, 1, 2, workload, *(s.fileno() for s, _ in listeners)})
    for low, high in zip(keep, [*keep[1:], os.sysconf("SC_OPEN_MAX")], strict=True):
        os.closerange(low + 1, high)  # the workload's passed fds are not ours to hold
    board = Switchboard()
    board.stop_when_readable(workload)
    for sock, path in listeners:
        board.listen(sock, _forward(board, path))
    board.run()


def main(argv: Sequence[str]) -> int:
    """Bind the listeners, start the forwarder, exec the workload (see module doc)."""
    routes, command = _parse(argv)
    try:
        listeners = _bind(routes)
    except OSError as exc:
        print(f"cellmesh netshim: cannot listen for a network grant: {exc}", file=sys.stderr)
        return 126
    sys.stdout.flush()
    sys.stderr.flush()
    if listeners:
        workload = os.getpid()
        child = os.fork()
        if child == 0:
            try:
                pidfd = os.pidfd_open(workload)  # while it waits for us: it is alive
                if os.fork() == 0:
                    _serve(listeners, pidfd)
            finally:
                os._exit(0)
        os.waitpid(child, 0)
    for sock, _path in listeners:
        sock.close()
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        print(f"cellmesh netshim: cannot run {command[0]!r}: {exc}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
