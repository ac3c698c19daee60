"""The root's Prometheus endpoint: ``cellmesh up --metrics HOST:PORT`` serves ``/metrics``.

Theory of operation
-------------------
:func:`serve_metrics` listens on TCP in the root's own Trio run (no thread
touches the root's state). Each scrape reads ``/proc`` once (in a worker
thread), folds the slots into the root's :class:`~._metrics.MeshMetrics`
and renders the families with the official client library
(``prometheus_client``: a custom collector, ``choose_encoder`` for the
classic text format or OpenMetrics as the scraper asks). The family
builders are listed in :data:`FAMILIES`: adding a group of metrics is one
function from a :class:`Scrape` to metric families.

HTTP is the minimum a scraper needs: ``GET``/``HEAD`` of ``/metrics``
(``/`` answers a pointer to it), one request per connection
(``Connection: close``). The endpoint is bounded like everything the root
serves: at most :data:`MAX_CONNECTIONS` connections at once, :data:`MAX_REQUEST`
bytes of request head, :data:`REQUEST_TIMEOUT` seconds to send it. When all
connections are taken, a new one evicts the oldest that has not sent its
request yet (:class:`Admission`), so idle connections cannot lock a scraper
out; it is closed at once only when every connection is being answered.
Anything else is answered 400/404/405 and closed.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Final, Protocol

import attrs
import trio
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry

from .._util import open_service_nursery
from ..errors import ConfigError
from . import _proc
from ._cells import CellSlot
from ._metrics import EXIT_KINDS, SPAWN_KEY, LabelGauges, MeshMetrics, SlotRow
from ._stats import RTT_BUCKETS_US
from .control import REPLICA_ROLES, ReplicaStats
from .manifest import Manifest
from .membership import GroupView

#: Connections served at once; more are closed without an answer.
MAX_CONNECTIONS: Final = 16
#: Longest request head read.
MAX_REQUEST: Final = 8192
#: Seconds a client has to send its request head (and to take the answer).
REQUEST_TIMEOUT: Final = 10.0


class MeshView(Protocol):
    """What a scrape reads of the root."""

    @property
    def slots(self) -> Mapping[str, CellSlot]: ...

    @property
    def started_at(self) -> float: ...

    def pid_of(self, slot: CellSlot) -> int | None: ...


@attrs.frozen(kw_only=True)
class Scrape:
    """One scrape's view: the root itself, the totals, the current gauges, its figures.

    A family builder reads what it needs from here; one that wants something
    of the root not summarised yet (a replicated cell's Raft figures, say)
    reads ``view`` -- label values must come from declared names only
    (:meth:`MeshMetrics.label`), never from what a cell reports.
    """

    view: MeshView
    metrics: MeshMetrics
    gauges: Mapping[str, LabelGauges]
    uptime: float
    states: Mapping[str, int]


def slot_rows(view: MeshView, samples: Mapping[int, _proc.ProcSample]) -> list[SlotRow]:
    """The slots as :meth:`MeshMetrics.sample` wants them."""
    rows: list[SlotRow] = []
    for slot in view.slots.values():
        pid = view.pid_of(slot)
        rss: int | None = None
        cpu: float | None = None
        if pid is not None:
            rss, cpu = _proc.totals(_proc.tree(pid, samples), samples)
        instance = slot.instance
        rows.append(SlotRow(
            name=slot.name, parent=slot.parent, spawned=slot.key == SPAWN_KEY,
            running=instance is not None and instance.state == "running",
            restarts=slot.restarts, pid=pid, rss=rss, cpu_seconds=cpu,
        ))
    return rows


# ---------------------------------------------------------------- families


def cell_families(scrape: Scrape) -> Iterator[Metric]:
    """Per-cell counters, the call-duration histogram, restarts, exits, CPU, memory."""
    totals = sorted(scrape.metrics.totals.items())
    received = CounterMetricFamily(
        "cellmesh_cell_messages_received", "Calls and signals a cell received.", labels=["cell"])
    replied = CounterMetricFamily(
        "cellmesh_cell_calls_answered", "Calls a cell answered (replies and errors).",
        labels=["cell"])
    errors = CounterMetricFamily(
        "cellmesh_cell_errors", "Calls and signals that failed in a cell.", labels=["cell"])
    restarts = CounterMetricFamily(
        "cellmesh_cell_restarts", "Restarts of a cell's process.", labels=["cell"])
    exits = CounterMetricFamily(
        "cellmesh_cell_exits", "Ends of a cell's processes, by kind.", labels=["cell", "kind"])
    cpu = CounterMetricFamily(
        "cellmesh_cell_cpu_seconds", "CPU time of a cell's processes (sampled at scrape).",
        labels=["cell"])
    duration = HistogramMetricFamily(
        "cellmesh_cell_call_duration_seconds",
        "Service time (receipt to reply) of a cell's sampled calls (1 in 16).", labels=["cell"])
    running = GaugeMetricFamily(
        "cellmesh_cell_running", "Processes of a cell that are serving.", labels=["cell"])
    rss = GaugeMetricFamily(
        "cellmesh_cell_resident_memory_bytes", "Resident memory of a cell's process trees.",
        labels=["cell"])
    for label, t in totals:
        received.add_metric([label], t.msgs_in)
        replied.add_metric([label], t.msgs_out)
        errors.add_metric([label], t.errors)
        restarts.add_metric([label], t.restarts)
        cpu.add_metric([label], t.cpu_seconds)
        for kind in EXIT_KINDS:
            exits.add_metric([label, kind], t.exits[kind])
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip((*RTT_BUCKETS_US, None), t.rtt_buckets, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound is None else repr(bound / 1e6), cumulative))
        duration.add_metric([label], buckets, t.rtt_sum_us / 1e6)
        gauges = scrape.gauges.get(label)
        running.add_metric([label], 0 if gauges is None else gauges.running)
        rss.add_metric([label], 0 if gauges is None else gauges.rss)
    yield from (received, replied, errors, duration, restarts, exits, cpu, running, rss)


def root_families(scrape: Scrape) -> Iterator[Metric]:
    """The root's uptime and its cells by state."""
    yield GaugeMetricFamily(
        "cellmesh_root_uptime_seconds", "Seconds since the root started.", value=scrape.uptime)
    states = GaugeMetricFamily(
        "cellmesh_root_cells", "Cells the root knows, by state.", labels=["state"])
    for state in ("running", "starting", "dormant", "stopped"):
        states.add_metric([state], scrape.states.get(state, 0))
    yield states


def replica_families(scrape: Scrape) -> Iterator[Metric]:
    """Each replica's Raft figures: role, term, commit and applied index, lag, leader changes,
    given-up flag (labels ``cell`` -- the replicated cell -- and ``replica``, its id).

    Read from the stats the replica last reported (validated by the root);
    a replica without a process has role ``none`` and no index figures.
    ``lag`` is what it has yet to apply of the log of the leader the root
    sees (as in ``cellmesh status``).
    """
    labels = ["cell", "replica"]
    role = GaugeMetricFamily(
        "cellmesh_replica_role", "1 for the role a replica reports (none: no process).",
        labels=[*labels, "role"])
    term = GaugeMetricFamily("cellmesh_replica_term", "The Raft term a replica is in.",
                             labels=labels)
    commit = GaugeMetricFamily("cellmesh_replica_commit_index",
                               "The highest log index a replica knows committed.", labels=labels)
    applied = GaugeMetricFamily("cellmesh_replica_applied_index",
                                "The highest log index a replica applied.", labels=labels)
    lag = GaugeMetricFamily("cellmesh_replica_lag_entries",
                            "Entries of the leader's log a replica has yet to apply.",
                            labels=labels)
    changes = CounterMetricFamily("cellmesh_replica_leader_changes",
                                  "Leader changes a replica reported (new term or leader).",
                                  labels=labels)
    given_up = GaugeMetricFamily(
        "cellmesh_replica_given_up", "1 when a replica's supervisor stopped restarting it.",
        labels=labels)
    metrics = scrape.metrics
    groups: dict[str, list[tuple[int, ReplicaStats | None, bool]]] = {}
    for slot in scrape.view.slots.values():
        part = slot.replica
        if part is None or part.group not in metrics.declared:
            continue
        instance = slot.instance
        alive = instance is not None and instance.state in ("starting", "running")
        groups.setdefault(part.group, []).append(
            (part.id, part.stats if alive else None, part.given_up))
    for group, members in sorted(groups.items()):
        view = GroupView.of(s for _, s, _ in members if s is not None)
        for replica, stats, gave_up in sorted(members, key=lambda m: m[0]):
            values = [group, str(replica)]
            current = "none" if stats is None else stats.role
            for name in ("none", *REPLICA_ROLES):
                role.add_metric([*values, name], 1.0 if name == current else 0.0)
            changes.add_metric(values, metrics.leader_changes.get((group, replica), 0))
            given_up.add_metric(values, 1.0 if gave_up else 0.0)
            if stats is None:
                continue
            term.add_metric(values, stats.term)
            commit.add_metric(values, stats.commit_index)
            applied.add_metric(values, stats.applied_index)
            behind = view.lag(stats)
            if behind is not None:
                lag.add_metric(values, behind)
    yield from (role, term, commit, applied, lag, changes, given_up)


#: Every group of metrics a scrape renders, in order.
FAMILIES: Final[tuple[Callable[[Scrape], Iterable[Metric]], ...]] = (
    root_families, cell_families, replica_families,
)


@attrs.define(eq=False)
class MeshCollector(Collector):
    """The prometheus_client collector of one root; :meth:`refresh` before each render."""

    view: MeshView
    metrics: MeshMetrics
    _scrape: Scrape | None = None

    def refresh(self, samples: Mapping[int, _proc.ProcSample], now: float) -> None:
        """Fold the slots in and take this scrape's view (``now``: ``time.monotonic()``,
        the clock of ``started_at``)."""
        rows = slot_rows(self.view, samples)
        states: dict[str, int] = {}
        for slot in self.view.slots.values():
            instance = slot.instance
            state = "stopped" if instance is None or instance.state == "exited" else instance.state
            states[state] = states.get(state, 0) + 1
        self._scrape = Scrape(
            view=self.view, metrics=self.metrics, gauges=self.metrics.sample(rows),
            uptime=now - self.view.started_at, states=states,
        )

    def collect(self) -> Iterable[Metric]:
        """The families of the last :meth:`refresh`."""
        scrape = self._scrape
        if scrape is None:
            return
        for family in FAMILIES:
            yield from family(scrape)


# ---------------------------------------------------------------- HTTP


def parse_request(head: bytes) -> tuple[str, str] | None:
    """(method, path) of an HTTP/1.x request head, or None when it is not one."""
    line = head.split(b"\r\n", 1)[0]
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return None
    try:
        method, target = parts[0].decode("ascii"), parts[1].decode("ascii")
    except UnicodeDecodeError:
        return None
    if not method.isalpha() or not target.startswith("/"):
        return None
    return method, target.split("?", 1)[0]


def _accept(head: bytes) -> str:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"accept":
            return value.strip().decode("latin-1")
    return ""


def _response(status: str, content_type: str, body: bytes, *, head_only: bool) -> bytes:
    header = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode("ascii")
    return header if head_only else header + body


@attrs.define(eq=False)
class MetricsServer:
    """Serves one collector over HTTP (see the module doc)."""

    collector: MeshCollector
    registry: CollectorRegistry
    served: int = 0

    @classmethod
    def for_root(cls, view: MeshView, metrics: MeshMetrics) -> MetricsServer:
        """A server whose registry holds exactly the root's collector."""
        collector = MeshCollector(view, metrics)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector)
        return cls(collector=collector, registry=registry)

    async def answer(self, head: bytes) -> bytes:
        """The whole response to one request head."""
        request = parse_request(head)
        if request is None:
            return _response("400 Bad Request", "text/plain", b"bad request\n", head_only=False)
        method, path = request
        head_only = method == "HEAD"
        if method not in ("GET", "HEAD"):
            return _response("405 Method Not Allowed", "text/plain", b"GET only\n",
                             head_only=False)
        if path == "/":
            return _response("200 OK", "text/plain; charset=utf-8",
                             b"cellmesh root: metrics at /metrics\n", head_only=head_only)
        if path != "/metrics":
            return _response("404 Not Found", "text/plain", b"not found\n", head_only=head_only)
        samples = await trio.to_thread.run_sync(_proc.scan)
        self.collector.refresh(samples, time.monotonic())
        encoder, content_type = choose_encoder(_accept(head))
        self.served += 1
        return _response("200 OK", content_type, encoder(self.registry), head_only=head_only)

    async def handle(self, stream: trio.abc.Stream, admission: Admission) -> None:
        """One connection: read the head (bounded, timed, evictable), answer, close."""
        place = admission.admit()
        if place is None:
            await stream.aclose()  # too many answers under way: no queue to grow
            return
        try:
            async with stream:
                with trio.move_on_after(REQUEST_TIMEOUT):
                    head = b""
                    with place.scope:  # a newer connection may take this one's place
                        while b"\r\n\r\n" not in head and len(head) < MAX_REQUEST:
                            chunk = await stream.receive_some(MAX_REQUEST - len(head))
                            if not chunk:
                                return
                            head += chunk
                    if place.state == "gone":  # evicted
                        return
                    admission.answering(place)
                    if b"\r\n\r\n" not in head:
                        reply = _response("431 Request Header Fields Too Large", "text/plain",
                                          b"request too large\n", head_only=False)
                    else:
                        reply = await self.answer(head)
                    with contextlib.suppress(trio.BrokenResourceError):
                        await stream.send_all(reply)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away
        finally:
            admission.release(place)


@attrs.define(eq=False)
class Place:
    """One admitted connection: ``reading`` its head (evictable), then ``busy``."""

    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    state: str = "reading"  # reading | busy | gone


@attrs.define(eq=False)
class Admission:
    """Who may hold one of the endpoint's ``limit`` connections.

    A connection still sending its request head may be *evicted* by a newer
    one when all are taken: a scraper sends its request at once, so idle or
    trickling connections (slowloris) cannot keep it out; they only take
    each other's places. Connections being answered are never evicted; when
    all ``limit`` are, a new one is closed at once.
    """

    limit: int = MAX_CONNECTIONS
    #: Connections reading their request head, oldest first.
    reading: dict[Place, None] = attrs.Factory(dict)
    #: Connections being answered.
    busy: int = 0
    evicted: int = 0

    def admit(self) -> Place | None:
        """A place for a new connection (evicting the oldest reader if need be), or None."""
        if len(self.reading) + self.busy >= self.limit:
            if not self.reading:
                return None
            oldest = next(iter(self.reading))
            self._leave(oldest)
            oldest.scope.cancel()
            self.evicted += 1
        place = Place()
        self.reading[place] = None
        return place

    def answering(self, place: Place) -> None:
        """The connection sent its head: it is answered now, never evicted."""
        if place.state == "reading":
            del self.reading[place]
            place.state = "busy"
            self.busy += 1

    def release(self, place: Place) -> None:
        """The connection ended: its place is free."""
        self._leave(place)

    def _leave(self, place: Place) -> None:
        if place.state == "reading":
            del self.reading[place]
        elif place.state == "busy":
            self.busy -= 1
        place.state = "gone"


async def serve_metrics(
    server: MetricsServer,
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``host:port`` and answer scrapes until cancelled.

    ``task_status`` gets the bound address (the port, if 0 was asked).
    Raises :class:`~cellmesh.errors.ConfigError` naming ``--metrics`` when the
    address cannot be listened on.
    """
    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        raise ConfigError(
            "--metrics", f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from None
    sockname = listeners[0].socket.getsockname()
    admission = Admission()
    task_status.started((str(sockname[0]), int(sockname[1])))

    async def handler(stream: trio.abc.Stream) -> None:
        await server.handle(stream, admission)

    try:
        await trio.serve_listeners(handler, listeners)
    finally:
        for listener in listeners:
            with contextlib.suppress(OSError):
                await listener.aclose()


class MetricsRoot(MeshView, Protocol):
    """A root that can carry metrics (what :func:`run_with_metrics` sets on it)."""

    metrics: MeshMetrics | None
    metrics_address: tuple[str, int] | None

    @property
    def manifest(self) -> Manifest: ...


async def run_with_metrics(
    root: MetricsRoot,
    address: tuple[str, int],
    run: Callable[[Any, str, trio.TaskStatus[Any]], Awaitable[None]],
    task_status: trio.TaskStatus[Any],
) -> None:
    """Serve ``root``'s metrics on ``address`` while ``run(root, manifest path,
    task_status)`` runs it (the endpoint listens before the mesh starts)."""
    root.metrics = MeshMetrics(declared=frozenset(root.manifest.cells))
    server = MetricsServer.for_root(root, root.metrics)
    async with open_service_nursery() as nursery:
        root.metrics_address = await nursery.start(serve_metrics, server, *address)
        await run(root, str(root.manifest.path), task_status)
        nursery.cancel_scope.cancel()


def metrics_families() -> Sequence[str]:
    """The metric names a scrape renders (for the docs and tests)."""
    return (
        "cellmesh_root_uptime_seconds", "cellmesh_root_cells",
        "cellmesh_cell_messages_received_total", "cellmesh_cell_calls_answered_total",
        "cellmesh_cell_errors_total", "cellmesh_cell_call_duration_seconds",
        "cellmesh_cell_restarts_total", "cellmesh_cell_exits_total",
        "cellmesh_cell_cpu_seconds_total", "cellmesh_cell_running",
        "cellmesh_cell_resident_memory_bytes",
    )


def replica_metrics_families() -> Sequence[str]:
    """The metric names a scrape renders for each replica of a replicated cell."""
    return (
        "cellmesh_replica_role", "cellmesh_replica_term", "cellmesh_replica_commit_index",
        "cellmesh_replica_applied_index", "cellmesh_replica_lag_entries",
        "cellmesh_replica_leader_changes_total", "cellmesh_replica_given_up",
    )


__all__ = [
    "FAMILIES",
    "Admission",
    "MAX_CONNECTIONS",
    "MAX_REQUEST",
    "REQUEST_TIMEOUT",
    "MeshCollector",
    "MeshView",
    "MetricsRoot",
    "MetricsServer",
    "Place",
    "Scrape",
    "cell_families",
    "metrics_families",
    "parse_request",
    "replica_families",
    "replica_metrics_families",
    "root_families",
    "run_with_metrics",
    "serve_metrics",
    "slot_rows",
]
