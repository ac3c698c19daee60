"""The cellmesh side of ``cellmesh bench wire``: bench proteins, the server, the rounds.

Server (one process): a membrane named after the socket file, with receptors
for ``bench.Ping`` (echo), ``bench.Tick`` (a signal: count it), ``bench.Count``
(reply with the count of ticks since the last Count, then reset) and
``bench.Blob`` (touch one byte per 4 KiB page of the payload, so the receiver
really maps every page; reply with its length).

Client rounds (one process, one synapse per round, warm-up first):

* ``cm_rtt``: ``fire(Ping)`` one at a time; each sample is one call.
* ``cm_pipeline``: ``fire_many`` of ``window`` Pings per batch, from
  ``pipeline_tasks`` (2) tasks, so two batches are in flight; building the
  Pings is inside the timing, as encoding is for the raw baseline. 1, 2, 3, 4
  or 8 tasks and batches of 256..4096 all measured within noise of each other
  (the membrane side is the bottleneck), so the simple shape stays.
* ``cm_signal``: ``signal_many`` (or ``signal`` in a loop) of Ticks in batches
  of ``signal_batch``, then one ``fire(Count)`` whose reply must equal the
  number sent -- the same shape as the raw one-way stream.
* ``cm_fire16`` / ``cm_fire256``: the natural pattern -- 16 (256) tasks, each
  ``await syn.fire(Ping)`` in a loop, ``natural_msgs`` calls in all.
* ``cm_fire256_await``: as ``cm_fire256`` with ``Nap``, whose handler awaits
  once (``trio.lowlevel.checkpoint()``) before it answers: the handler that
  calls another cell, sleeps or takes a lock, which suspends in the reader.
* ``cm_signal_loop``: ``await syn.signal(Tick)`` in a loop, then ``fire(Count)``.
* ``cm_signal_nowait``: ``syn.signal_nowait(Tick)`` in a loop, falling back to
  ``await syn.signal(Tick)`` when it raises ``trio.WouldBlock`` (no credit
  left), then ``fire(Count)``.
* ``cm_pipeline_rec``: as ``cm_pipeline`` with ``Rec`` (an int, a 16-byte
  ``bytes`` and a short ``str``), echoed back.
* ``cm_vesicle``: a fresh ``Vesicle.alloc`` filled in place (outside the
  timing) sent as ``Blob.data``; the timing covers seal, send, map, the touch
  and the reply.
* ``cm_inline``: the same payload as plain ``bytes`` with vesicles disabled on
  both sides and the frame limit raised to fit.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, Final

import attrs
import trio

import cellmesh

from ._params import WireParams, bulk_payload

__all__ = [
    "Blob", "Count", "Ping", "Rec", "Tick", "make_round", "rec", "serve", "unavailable_reason",
]

_REQUIRED: Final = ("protein", "Receptors", "Membrane", "Synapse", "Vesicle")
_PAGE: Final = 4096
_INLINE_FRAME: Final = 256 << 20
_NO_VESICLES: Final = 2**62


def unavailable_reason() -> str | None:
    """Return why the cellmesh side cannot run, or ``None``."""
    missing = [n for n in _REQUIRED if not hasattr(cellmesh, n)]
    if missing:
        return "cellmesh does not export " + ", ".join(missing) + " yet"
    return None


@cellmesh.protein("bench.Ping")
class Ping:
    """A call: echoed back."""

    n: int


@cellmesh.protein("bench.Tick")
class Tick:
    """A one-way signal: counted."""

    n: int


@cellmesh.protein("bench.Count")
class Count:
    """Request: ``n`` ignored. Reply: ticks since the previous Count (or a blob's length)."""

    n: int


@cellmesh.protein("bench.Rec")
class Rec:
    """A call with repeating bytes and str fields: echoed back."""

    n: int
    key: bytes
    name: str


def rec(n: int) -> Rec:
    """The ``n``-th Rec: a 16-byte key and a short name, both varying with ``n``."""
    return Rec(n=n, key=n.to_bytes(8, "little") * 2, name=f"user-{n % 1000}")


@cellmesh.protein("bench.Nap")
class Nap:
    """A call whose handler awaits once before it echoes it back."""

    n: int


@cellmesh.protein("bench.Blob")
class Blob:
    """A bulk payload: inline bytes or a vesicle."""

    data: bytes


# --------------------------------------------------------------------------
# Server.


@attrs.define(eq=False)
class _Counter:
    ticks: int = 0


def _receptors() -> cellmesh.Receptors:
    counter = _Counter()
    receptors = cellmesh.Receptors()

    @receptors.on(Ping)
    async def on_ping(msg: Ping) -> Ping:
        return msg

    @receptors.on(Rec)
    async def on_rec(msg: Rec) -> Rec:
        return msg

    @receptors.on(Nap)
    async def on_nap(msg: Nap) -> Nap:
        await trio.lowlevel.checkpoint()
        return msg

    @receptors.on(Tick)
    async def on_tick(msg: Tick) -> None:
        counter.ticks += 1

    @receptors.on(Count)
    async def on_count(msg: Count) -> Count:
        n, counter.ticks = counter.ticks, 0
        return Count(n=n)

    @receptors.on(Blob)
    async def on_blob(msg: Blob) -> Count:
        data = msg.data
        touched = sum(memoryview(data)[::_PAGE])  # fault in every page once
        return Count(n=len(data) if touched >= 0 else -1)

    return receptors


def _options(inline: bool) -> dict[str, Any]:
    if inline:
        return {"vesicle_threshold": _NO_VESICLES, "max_frame_size": _INLINE_FRAME}
    return {}


def _split(path: str) -> tuple[str, str]:
    """``/dir/name.sock`` -> (``/dir``, ``name``): cellmesh names sockets ``<name>.sock``."""
    directory, base = os.path.split(path)
    return directory, base.removesuffix(".sock")


async def serve(path: str, inline: bool, ready: Callable[[], None]) -> None:
    """Serve the bench receptors at ``path`` until cancelled; call ``ready`` once listening."""
    socket_dir, name = _split(path)
    async with cellmesh.open_membrane(
        name, _receptors(), socket_dir=socket_dir, **_options(inline)
    ):
        ready()
        await trio.sleep_forever()


# --------------------------------------------------------------------------
# Client rounds.


def _grow(path: str, inline: bool) -> Any:
    socket_dir, name = _split(path)
    return cellmesh.Synapse.grow(name, socket_dir=socket_dir, **_options(inline))


async def _rtt(path: str, p: WireParams) -> list[int]:
    clock = time.perf_counter_ns
    rtts: list[int] = []
    async with _grow(path, False) as syn:
        for i in range(p.rtt_warmup + p.rtt_samples):
            t0 = clock()
            reply = await syn.fire(Ping(n=i))
            t1 = clock()
            if reply.n != i:
                raise RuntimeError(f"Ping({i}) answered with {reply!r}")
            if i >= p.rtt_warmup:
                rtts.append(t1 - t0)
    return rtts


async def _pipeline_batches(
    syn: Any,
    start: int,
    total: int,
    window: int,
    tasks: int,
    *,
    make: Callable[[int], Any] = Ping,
) -> None:
    """Complete messages ``start .. start+total-1``: ``tasks`` tasks, one batch in flight each."""
    stop = start + total
    cursor = [start]

    async def worker() -> None:
        while cursor[0] < stop:
            first = cursor[0]
            last = min(first + window, stop)
            cursor[0] = last
            replies = await syn.fire_many([make(i) for i in range(first, last)])
            if len(replies) != last - first or replies[-1].n != last - 1:
                raise RuntimeError(f"fire_many({first}..{last}) answered wrongly")

    async with trio.open_nursery() as nursery:
        for _ in range(tasks):
            nursery.start_soon(worker)


async def _pipeline(path: str, p: WireParams, make: Callable[[int], Any]) -> float:
    async with _grow(path, False) as syn:
        await _pipeline_batches(syn, 0, p.warmup_msgs, p.window, p.pipeline_tasks, make=make)
        t0 = time.perf_counter()
        await _pipeline_batches(
            syn, p.warmup_msgs, p.pipeline_msgs, p.window, p.pipeline_tasks, make=make
        )
        return time.perf_counter() - t0


async def _fire_tasks(
    syn: Any, start: int, total: int, tasks: int, make: Callable[..., Any] = Ping
) -> None:
    """``tasks`` tasks, each ``await syn.fire(make(n=i))`` in a loop: ``total`` calls in all."""
    per_task = max(1, total // tasks)

    async def worker(first: int) -> None:
        for i in range(first, first + per_task):
            reply = await syn.fire(make(n=i))
            if reply.n != i:
                raise RuntimeError(f"Ping({i}) answered with {reply!r}")

    async with trio.open_nursery() as nursery:
        for t in range(tasks):
            nursery.start_soon(worker, start + t * per_task)


async def _natural_fire(
    path: str, p: WireParams, tasks: int, make: Callable[..., Any] = Ping
) -> float:
    async with _grow(path, False) as syn:
        await _fire_tasks(syn, 0, max(tasks, p.natural_msgs // 10), tasks, make)
        t0 = time.perf_counter()
        await _fire_tasks(syn, 0, p.natural_msgs, tasks, make)
        return time.perf_counter() - t0


async def _signal_loop(syn: Any, total: int, nowait: bool) -> None:
    if nowait:
        for i in range(total):
            try:
                syn.signal_nowait(Tick(n=i))
            except trio.WouldBlock:
                await syn.signal(Tick(n=i))
    else:
        for i in range(total):
            await syn.signal(Tick(n=i))
    reply = await syn.fire(Count(n=0))
    if reply.n != total:
        raise RuntimeError(f"server counted {reply.n} signals, sent {total}")


async def _natural_signal(path: str, p: WireParams, nowait: bool) -> float:
    async with _grow(path, False) as syn:
        await _signal_loop(syn, p.natural_msgs // 10, nowait)
        t0 = time.perf_counter()
        await _signal_loop(syn, p.natural_msgs, nowait)
        return time.perf_counter() - t0


async def _signals(syn: Any, total: int, batch: int) -> None:
    signal_many = getattr(syn, "signal_many", None)
    done = 0
    while done < total:
        last = min(done + batch, total)
        if signal_many is not None:
            await signal_many([Tick(n=i) for i in range(done, last)])
        else:
            for i in range(done, last):
                await syn.signal(Tick(n=i))
        done = last
    reply = await syn.fire(Count(n=0))
    if reply.n != total:
        raise RuntimeError(f"server counted {reply.n} signals, sent {total}")


async def _signal(path: str, p: WireParams) -> float:
    async with _grow(path, False) as syn:
        await _signals(syn, p.warmup_msgs, p.signal_batch)
        t0 = time.perf_counter()
        await _signals(syn, p.signal_msgs, p.signal_batch)
        return time.perf_counter() - t0


async def _bulk(path: str, p: WireParams, payload: bytes, inline: bool) -> list[float]:
    times: list[float] = []
    async with _grow(path, inline) as syn:
        for i in range(p.bulk_warmup + p.bulk_transfers):
            if inline:
                data: Any = payload
            else:
                data = cellmesh.Vesicle.alloc(len(payload))
                data.buffer[:] = payload
            t0 = time.perf_counter()
            reply = await syn.fire(Blob(data=data))
            elapsed = time.perf_counter() - t0
            if not inline:
                data.close()
            if reply.n != len(payload):
                raise RuntimeError(f"Blob of {len(payload)} B answered with {reply!r}")
            if i >= p.bulk_warmup:
                times.append(elapsed)
    return times


def make_round(kind: str, path: str, p: WireParams) -> Callable[[], dict[str, Any]]:
    """Return a function performing one measured round of the cellmesh ``kind``."""
    reason = unavailable_reason()
    if reason is not None:
        raise RuntimeError(reason)
    if kind == "cm_rtt":
        return lambda: {"rtt_ns": trio.run(_rtt, path, p)}
    if kind == "cm_pipeline":
        return lambda: {"msgs": p.pipeline_msgs, "seconds": trio.run(_pipeline, path, p, Ping)}
    if kind == "cm_pipeline_rec":
        return lambda: {"msgs": p.pipeline_msgs, "seconds": trio.run(_pipeline, path, p, rec)}
    if kind in ("cm_fire16", "cm_fire256"):
        tasks = int(kind.removeprefix("cm_fire"))
        msgs = max(1, p.natural_msgs // tasks) * tasks
        return lambda: {"msgs": msgs, "seconds": trio.run(_natural_fire, path, p, tasks)}
    if kind == "cm_fire256_await":
        msgs = max(1, p.natural_msgs // 256) * 256
        return lambda: {"msgs": msgs, "seconds": trio.run(_natural_fire, path, p, 256, Nap)}
    if kind in ("cm_signal_loop", "cm_signal_nowait"):
        nowait = kind == "cm_signal_nowait"
        return lambda: {
            "msgs": p.natural_msgs, "seconds": trio.run(_natural_signal, path, p, nowait)
        }
    if kind == "cm_signal":
        return lambda: {"msgs": p.signal_msgs, "seconds": trio.run(_signal, path, p)}
    if kind in ("cm_inline", "cm_vesicle"):

        payload = bulk_payload(p.bulk_bytes)
        inline = kind == "cm_inline"
        return lambda: {
            "bytes": len(payload),
            "seconds": trio.run(_bulk, path, p, payload, inline),
        }
    raise ValueError(f"unknown cellmesh client kind {kind!r}")
