"""Optional pyzmq reference baselines for ``cellmesh bench wire`` (``pip install pyzmq``).

A DEALER client talks to a ROUTER server over ``ipc://``; each message is one
zmq message holding one ``cbor2.dumps`` body of the same shapes as
:mod:`.baselines` (call ``[1, id, "ping", [n]]`` -> reply ``[2, id, [n]]``,
signal ``[3, "ping", [n]]``, count ``[4, id]`` -> ``[5, id, count]``). The
pipelined client keeps ``window`` calls outstanding by sending one new call per
reply received; zmq batches the writes itself. pyzmq is imported inside the
functions so the bench runs without it.
"""

from __future__ import annotations

import time
from typing import Any

import cbor2

from .baselines import CALL, COUNT, COUNT_REPLY, REPLY, SIGNAL, BaselineError

__all__ = ["client_zmq_oneway", "client_zmq_pipeline", "serve_zmq", "zmq_unavailable"]


def zmq_unavailable() -> str | None:
    """Return why the pyzmq baselines cannot run, or ``None``."""
    try:
        import zmq  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        return "pyzmq is not installed (pip install pyzmq, or the cellmesh[bench] extra)"
    return None


def serve_zmq(path: str, ready: Any) -> None:
    """ROUTER on ``ipc://path``: reply to calls, count signals, answer count requests."""
    import zmq  # type: ignore[import-not-found,unused-ignore]

    ctx: Any = zmq.Context()
    sock: Any = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.SNDHWM, 0)  # 0 = unlimited: a ROUTER drops replies at its HWM
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.bind(f"ipc://{path}")
    ready()
    loads = cbor2.loads
    dumps = cbor2.dumps
    count = 0
    while True:
        peer, body = sock.recv_multipart()
        msg = loads(body)
        kind = msg[0]
        if kind == SIGNAL:
            count += 1
        elif kind == CALL:
            sock.send_multipart([peer, dumps([REPLY, msg[1], msg[3]])])
        elif kind == COUNT:
            sock.send_multipart([peer, dumps([COUNT_REPLY, msg[1], count])])
            count = 0


def _connect(path: str) -> Any:
    import zmq  # type: ignore[import-not-found,unused-ignore]

    ctx: Any = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.connect(f"ipc://{path}")
    return sock


def _run_pipeline(sock: Any, start: int, total: int, window: int) -> None:
    dumps = cbor2.dumps
    loads = cbor2.loads
    stop = start + total
    sent = start
    for i in range(start, start + min(window, total)):
        sock.send(dumps([CALL, i, "ping", [i]]))
        sent += 1
    for expected in range(start, stop):
        reply = loads(sock.recv())
        if reply[1] != expected:
            raise BaselineError(f"reply {reply[1]} arrived, expected {expected}")
        if sent < stop:
            sock.send(dumps([CALL, sent, "ping", [sent]]))
            sent += 1


def client_zmq_pipeline(path: str, msgs: int, window: int, warmup: int) -> float:
    """Complete ``msgs`` pipelined DEALER/ROUTER calls; return the seconds taken."""
    sock = _connect(path)
    try:
        if warmup:
            _run_pipeline(sock, 0, warmup, window)
        t0 = time.perf_counter()
        _run_pipeline(sock, warmup, msgs, window)
        return time.perf_counter() - t0
    finally:
        sock.close()


def _run_oneway(sock: Any, total: int) -> None:
    dumps = cbor2.dumps
    for i in range(total):
        sock.send(dumps([SIGNAL, "ping", [i]]))
    sock.send(dumps([COUNT, 0]))
    reply = cbor2.loads(sock.recv())
    if reply[2] != total:
        raise BaselineError(f"server counted {reply[2]} signals, sent {total}")


def client_zmq_oneway(path: str, msgs: int, warmup: int) -> float:
    """Send ``msgs`` one-way messages and await the count; return the seconds taken."""
    sock = _connect(path)
    try:
        if warmup:
            _run_oneway(sock, warmup)
        t0 = time.perf_counter()
        _run_oneway(sock, msgs)
        return time.perf_counter() - t0
    finally:
        sock.close()
