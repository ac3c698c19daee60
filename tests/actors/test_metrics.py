"""The root's Prometheus metrics: the pure accumulation, the HTTP edge, and a real scrape.

The live test runs a real root with real cells, scrapes it with a real HTTP
client (urllib) and parses the answer with prometheus_client's official
text-format parsers (classic and OpenMetrics).
"""

from __future__ import annotations

import math
import socket
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from rootcells import LIE_MSGS, Echo, Spawn
from test_root import cell, running_root

from cellmesh import Synapse
from cellmesh.actors._metrics import (
    BUCKET_COUNT,
    MAX_COUNT,
    MAX_RTT_US,
    MeshMetrics,
    SlotRow,
    accept_stats,
    parse_address,
)
from cellmesh.actors._metrics_http import (
    MAX_REQUEST,
    REQUEST_TIMEOUT,
    Admission,
    MetricsServer,
    metrics_families,
    parse_request,
)
from cellmesh.actors.control import CellStats, KillCell
from cellmesh.actors.policy import AbnormalExit, NormalExit
from cellmesh.errors import ConfigError
from cellmesh.testing.mesh import open_root


def stats(n: int, *, buckets: tuple[int, ...] = (), total: float = 0.0) -> CellStats:
    return CellStats(msgs_in=n, msgs_out=n, errors=0, rtt_p50_us=1.0, rtt_p99_us=2.0,
                     rtt_buckets=buckets, rtt_sum_us=total)


class Ref:
    def __init__(self, name: str, parent: str | None = None, key: str = "") -> None:
        self.name, self.parent, self.key = name, parent, key


# ---------------------------------------------------------------- pure


def test_totals_never_go_back_across_restarts_and_resets() -> None:
    m = MeshMetrics(declared=frozenset({"db"}))
    db = Ref("db")
    m.observe_stats(db, 100, stats(10))
    m.observe_stats(db, 100, stats(25))  # +15
    m.observe_stats(db, 200, stats(4))  # a new process: counts from zero
    m.observe_stats(db, 200, stats(2))  # went down: a reset, counts from zero
    assert m.totals["db"].msgs_in == 25 + 4 + 2


def test_histograms_add_the_intervals_and_drop_malformed_ones() -> None:
    m = MeshMetrics(declared=frozenset({"db"}))
    one = tuple([1] + [0] * (BUCKET_COUNT - 1))
    m.observe_stats(Ref("db"), 1, accept_stats(stats(1, buckets=one, total=30.0)))
    m.observe_stats(Ref("db"), 1, accept_stats(stats(2, buckets=one, total=20.0)))
    m.observe_stats(Ref("db"), 1, accept_stats(stats(3, buckets=(5, 5), total=1.0)))
    assert m.totals["db"].rtt_buckets[0] == 2 and sum(m.totals["db"].rtt_buckets) == 2
    assert m.totals["db"].rtt_sum_us == 50.0


@pytest.mark.parametrize(
    "bad",
    [
        stats(-5),
        stats(MAX_COUNT + 1),
        stats(1, buckets=tuple(range(10_000))),
        stats(1, buckets=tuple([-1] * BUCKET_COUNT)),
        stats(1, buckets=tuple([0] * BUCKET_COUNT), total=math.inf),
        CellStats(msgs_in=1, msgs_out=1, errors=1, rtt_p50_us=math.nan, rtt_p99_us=-1.0),
    ],
)
def test_accept_stats_keeps_only_what_it_believes(bad: CellStats) -> None:
    kept = accept_stats(bad)
    assert 0 <= kept.msgs_in <= MAX_COUNT
    assert kept.rtt_buckets == () or len(kept.rtt_buckets) == BUCKET_COUNT
    assert len(kept.rtt_buckets) <= BUCKET_COUNT  # a cell cannot make the root hold more
    assert kept.rtt_p50_us is None or kept.rtt_p50_us >= 0


def test_accept_stats_bounds_finite_but_absurd_service_times() -> None:
    """Audit: a cell reporting rtt_p50_us=1e300 (finite, so it was kept) made `status`
    print a 300-digit P50 that collapsed every other column, for every cell; a
    histogram sum of 1e300 us per report made the Prometheus sum reach inf."""
    one_slow = tuple([0] * (BUCKET_COUNT - 1) + [1])  # one call above the last bound
    lie = CellStats(msgs_in=5, msgs_out=5, errors=0, rtt_p50_us=1e300, rtt_p99_us=1e300,
                    rtt_buckets=one_slow, rtt_sum_us=1e300)
    kept = accept_stats(lie)
    assert (kept.rtt_p50_us, kept.rtt_p99_us) == (None, None)
    assert kept.rtt_buckets == one_slow and kept.rtt_sum_us == MAX_RTT_US
    fast = tuple([3] + [0] * (BUCKET_COUNT - 1))  # three calls under 50 us
    assert accept_stats(stats(1, buckets=fast, total=1e300)).rtt_sum_us == 150.0
    assert accept_stats(stats(1, buckets=fast, total=120.0)).rtt_sum_us == 120.0
    edge = CellStats(msgs_in=1, msgs_out=1, errors=0, rtt_p50_us=MAX_RTT_US,
                     rtt_p99_us=MAX_RTT_US * 1.0001)
    assert (accept_stats(edge).rtt_p50_us, accept_stats(edge).rtt_p99_us) == (MAX_RTT_US, None)
    m = MeshMetrics(declared=frozenset({"liar"}))
    for _ in range(10_000):
        m.observe_stats(Ref("liar"), 1, accept_stats(lie))
    assert m.totals["liar"].rtt_sum_us == 10_000 * MAX_RTT_US  # finite, believable


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "a.x", "a.y", "q.z", "w"]),
                          st.integers(0, 3), st.integers(-10, 10**6)), max_size=50))
def test_labels_are_bounded_whatever_cells_do(events: list[tuple[str, int, int]]) -> None:
    m = MeshMetrics(declared=frozenset({"a", "b"}))
    for name, pid, count in events:
        parent = name.split(".")[0] if "." in name else None
        m.observe_stats(Ref(name, parent), pid, accept_stats(stats(count)))
        m.observe_exit(Ref(name, parent, key="SpawnCell" if name == "w" else ""),
                       AbnormalExit(text="x") if pid else NormalExit())
    assert set(m.totals) <= {"a", "b", "a.*", "~dynamic", "~spawned"}
    assert all(t.msgs_in >= 0 for t in m.totals.values())


def test_a_cell_a_reload_adds_gets_its_own_label_and_its_children_theirs() -> None:
    m = MeshMetrics(declared=frozenset({"a"}))
    assert (m.label("n", None), m.label("n.kid", "n")) == ("~dynamic", "~dynamic")
    m.declare("n")  # what Root.start_declared does for a cell new in the manifest
    assert (m.label("n", None), m.label("n.kid", "n")) == ("n", "n.*")
    assert m.declared == {"a", "n"}


def test_a_dropped_slot_is_forgotten_at_once_not_at_the_next_scrape() -> None:
    """Attack: a parent churning children under fresh names grew the root's per-name
    state until someone scraped (100k names: 17.5 MiB); the root forgets a name when
    it drops the slot (Root._drop_slot)."""
    m = MeshMetrics(declared=frozenset({"p"}))
    for i in range(10_000):
        name = f"p.c{i}"
        m.observe_stats(Ref(name, "p"), i, accept_stats(stats(3)))
        m.forget(name)
    assert m._stats == {} and m._restarts == {} and m._cpu == {}
    assert m.totals["p.*"].msgs_in == 30_000  # the counts stay


def test_sample_folds_restarts_and_cpu_and_forgets_gone_slots() -> None:
    m = MeshMetrics(declared=frozenset({"db", "web"}))

    def row(name: str, restarts: int, pid: int | None, cpu: float | None) -> SlotRow:
        return SlotRow(name=name, parent=None, spawned=False, running=pid is not None,
                       restarts=restarts, pid=pid, rss=None if pid is None else 1000,
                       cpu_seconds=cpu)

    gauges = m.sample([row("db", 0, 10, 1.5), row("web", 0, None, None)])
    assert gauges["db"].running == 1 and gauges["db"].rss == 1000
    assert gauges["web"].running == 0
    m.sample([row("db", 2, 11, 0.25)])  # restarted twice, new process
    assert m.totals["db"].restarts == 2
    assert m.totals["db"].cpu_seconds == pytest.approx(1.75)
    m.observe_stats(Ref("web"), 5, stats(7))
    m.sample([row("db", 2, 11, 0.5)])  # web is gone: what was kept for it goes ...
    assert m.totals["web"].msgs_in == 7  # ... but its totals stay (a series never goes back)
    m.observe_stats(Ref("web"), 5, stats(9))  # a new slot of that name counts from zero
    assert m.totals["web"].msgs_in == 7 + 9


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("127.0.0.1:9464", ("127.0.0.1", 9464)), ("[::1]:0", ("::1", 0)),
     ("localhost:80", ("localhost", 80))],
)
def test_parse_address(text: str, parsed: tuple[str, int]) -> None:
    assert parse_address(text) == parsed


@pytest.mark.parametrize("text", ["9464", ":9464", "host:", "host:port", "h:70000", "h:-1"])
def test_parse_address_refuses_names_the_option(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^--metrics: expected HOST:PORT"):
        parse_address(text)


@given(st.binary(max_size=300))
def test_parse_request_takes_any_bytes(head: bytes) -> None:
    parsed = parse_request(head)
    assert parsed is None or (parsed[0].isalpha() and parsed[1].startswith("/"))


# ---------------------------------------------------------------- HTTP edge


class FakeView:
    slots: dict[str, object] = {}  # noqa: RUF012
    started_at = 0.0

    def pid_of(self, slot: object) -> int | None:
        return None


def server() -> MetricsServer:
    return MetricsServer.for_root(FakeView(), MeshMetrics(declared=frozenset()))  # type: ignore[arg-type]


async def exchange(request: bytes, *, close: bool = False) -> bytes:
    ours, theirs = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server().handle, theirs, Admission(limit=1))
        await ours.send_all(request)
        if close:
            await ours.send_eof()
        out = b""
        while chunk := await ours.receive_some():
            out += chunk
    return out


@pytest.mark.parametrize(
    ("request_", "status"),
    [
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", b"200"),
        (b"HEAD /metrics HTTP/1.0\r\n\r\n", b"200"),
        (b"GET / HTTP/1.1\r\n\r\n", b"200"),
        (b"GET /other HTTP/1.1\r\n\r\n", b"404"),
        (b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", b"405"),
        (b"\x16\x03\x01 garbage\r\n\r\n", b"400"),
        (b"GET /metrics HTTP/1.1\r\n" + b"X: " + b"y" * MAX_REQUEST + b"\r\n\r\n", b"431"),
    ],
)
async def test_the_endpoint_answers_each_request_once_and_closes(
    request_: bytes, status: bytes
) -> None:
    reply = await exchange(request_)
    assert reply.startswith(b"HTTP/1.1 " + status)
    assert b"Connection: close" in reply


async def test_a_client_that_never_sends_is_dropped_after_the_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server().handle, theirs, Admission(limit=1))
        await ours.send_all(b"GET /metr")  # and nothing more
        assert await ours.receive_some() == b""  # closed, no answer
    assert trio.current_time() >= REQUEST_TIMEOUT


async def test_connections_beyond_the_limit_are_closed_when_all_are_being_answered() -> None:
    admission = Admission(limit=1)
    place = admission.admit()
    assert place is not None
    admission.answering(place)  # the one place is taken by an answer under way
    ours, theirs = trio.testing.memory_stream_pair()
    await server().handle(theirs, admission)
    assert await ours.receive_some() == b""
    assert admission.busy == 1 and not admission.reading


async def test_idle_connections_cannot_lock_a_scraper_out() -> None:
    """Slowloris: every place held by a connection that sends nothing. A new
    connection evicts the oldest of them, so a scraper is answered; the idle
    ones only take each other's places."""
    admission = Admission(limit=4)
    srv = server()
    async with trio.open_nursery() as nursery:
        idle = []
        for _ in range(4 + 8):  # more idle connections than places, kept open
            ours, theirs = trio.testing.memory_stream_pair()
            idle.append(ours)
            nursery.start_soon(srv.handle, theirs, admission)
            await trio.testing.wait_all_tasks_blocked()
            assert len(admission.reading) + admission.busy <= 4
        assert admission.evicted == 8
        reply = await scrape_once(srv, admission)
        assert reply.startswith(b"HTTP/1.1 200")
        for ours in idle[-3:]:  # the newest idle ones still hold their places
            await ours.send_all(b"GET / HTTP/1.1\r\n\r\n")
            assert (await ours.receive_some()).startswith(b"HTTP/1.1 200")
        nursery.cancel_scope.cancel()
    assert not admission.reading and admission.busy == 0


async def scrape_once(srv: MetricsServer, admission: Admission) -> bytes:
    ours, theirs = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(srv.handle, theirs, admission)
        await ours.send_all(b"GET /metrics HTTP/1.1\r\n\r\n")
        out = b""
        while chunk := await ours.receive_some():
            out += chunk
    return out


# ---------------------------------------------------------------- a real scrape


def scrape(address: tuple[str, int], accept: str | None = None) -> tuple[str, str]:
    request = urllib.request.Request(f"http://{address[0]}:{address[1]}/metrics")
    if accept is not None:
        request.add_header("Accept", accept)
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.headers["Content-Type"], response.read().decode()


def sample_value(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


async def scrape_until(
    address: tuple[str, int], done: Callable[[str], bool]
) -> str:
    """Scrape until ``done(text)``: cells report about once a second."""
    with trio.fail_after(30):
        while True:
            _, text = await trio.to_thread.run_sync(scrape, address)
            if done(text):
                return text
            await trio.sleep(0.2)


async def test_prometheus_scrapes_the_mesh_with_bounded_labels() -> None:
    toml = (
        cell("echo", "Echoer")
        + cell("watcher", "Watcher", max_children="2", templates='["worker"]')
        + '[templates.worker]\ndna = "rootcells.py"\nentry = "rootcells:Echoer"\n'
    )
    async with running_root(toml, metrics=("127.0.0.1", 0)) as (root, paths):
        address = root.metrics_address
        assert address is not None
        async with Synapse.grow("echo", socket_dir=paths.socket_dir) as syn:
            assert len(await syn.fire_many([Echo(i) for i in range(400)])) == 400
        async with Synapse.grow("watcher", socket_dir=paths.socket_dir) as syn:
            await syn.fire(Spawn(suffix="a"))
            await syn.fire(Spawn(suffix="b"))
        text = await scrape_until(address, lambda t: (
            (sample_value(t, "cellmesh_cell_messages_received_total", cell="echo") or 0) >= 400
        ))
        families = {f.name: f for f in text_string_to_metric_families(text)}
        names = {s.name for f in families.values() for s in f.samples}
        for name in metrics_families():
            assert name in names or f"{name}_count" in names, name
        assert families["cellmesh_cell_messages_received"].type == "counter"
        assert families["cellmesh_cell_call_duration_seconds"].type == "histogram"
        assert families["cellmesh_cell_resident_memory_bytes"].type == "gauge"
        buckets = [s for s in families["cellmesh_cell_call_duration_seconds"].samples
                   if s.name.endswith("_bucket") and s.labels["cell"] == "echo"]
        counts = [s.value for s in buckets]
        assert counts == sorted(counts) and counts[-1] >= 400 // 16 - 1
        assert buckets[-1].labels["le"] == "+Inf"
        labels = {s.labels.get("cell") for f in families.values() for s in f.samples} - {None}
        assert labels == {"echo", "watcher", "watcher.*"}  # the children share one label
        assert (sample_value(text, "cellmesh_cell_running", cell="watcher.*") or 0) == 2
        assert (sample_value(text, "cellmesh_cell_resident_memory_bytes", cell="echo") or 0) > 0

        async with Synapse.grow("mitosis", socket_path=paths.umbilical) as ctl:
            await ctl.fire(KillCell(name="echo"))
        text = await scrape_until(address, lambda t: (
            sample_value(t, "cellmesh_cell_restarts_total", cell="echo") == 1
        ))
        assert sample_value(text, "cellmesh_cell_exits_total", cell="echo", kind="abnormal") == 1
        # a restart never makes a counter go back
        assert (sample_value(text, "cellmesh_cell_messages_received_total", cell="echo")
                or 0) >= 400

        content_type, om = await trio.to_thread.run_sync(
            scrape, address, "application/openmetrics-text; version=1.0.0"
        )
        assert content_type.startswith("application/openmetrics-text")
        om_names = {f.name for f in openmetrics_families(om)}
        assert "cellmesh_cell_messages_received" in om_names


async def test_a_cell_reporting_absurd_service_times_wrecks_neither_status_nor_metrics() -> None:
    """Audit: a cell sending its own CellStats with rtt_p50_us=1e300 (finite: accepted)
    made `status` and `top` print a 300-digit P50, and rich then collapsed every other
    column, the CELL names of all rows included, to "…"; the Prometheus sum grew by
    1e300 a report. The root now refuses such times and caps the sum."""
    import io
    import json

    from rich.console import Console

    from cellmesh.cli._ops import rates, status_json, status_table, top_frame

    toml = cell("honest", "Echoer") + cell("liar", "Liar") + cell("other", "Echoer")
    async with running_root(toml, metrics=("127.0.0.1", 0)) as (root, _paths):
        address = root.metrics_address
        assert address is not None
        with trio.fail_after(30):  # the liar's report, not one of its runtime's own
            while (got := root.slots["liar"].stats) is None or got.msgs_in != LIE_MSGS:
                await trio.sleep(0.01)
        assert (got.rtt_p50_us, got.rtt_p99_us) == (None, None)
        assert got.rtt_sum_us <= MAX_RTT_US
        reply = root.status()
        for renderable in (status_table(reply), top_frame(reply, rates(reply, reply, 1.0),
                                                          interval=1.0)):
            buf = io.StringIO()
            Console(file=buf, width=160, no_color=True).print(renderable)
            lines = buf.getvalue().splitlines()
            assert "…" not in buf.getvalue(), buf.getvalue()
            for name in ("honest", "liar", "other"):
                assert any(line.split()[:1] == [name] for line in lines), name
        json.dumps(status_json(reply), allow_nan=False)
        text = await scrape_until(address, lambda t: (
            (sample_value(t, "cellmesh_cell_call_duration_seconds_count", cell="liar") or 0) >= 2
        ))
        count = sample_value(text, "cellmesh_cell_call_duration_seconds_count", cell="liar")
        total = sample_value(text, "cellmesh_cell_call_duration_seconds_sum", cell="liar")
        assert count is not None and total is not None
        assert total <= count * MAX_RTT_US / 1e6  # at most an hour a call, never 1e294 s


async def test_uptimes_do_not_follow_a_wall_clock_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """Audit: uptimes were differences of time.time(), so a clock step (NTP, an
    operator's date) made them jump by years or go negative. They are monotonic."""
    import time

    async with running_root(cell("echo", "Echoer"), metrics=("127.0.0.1", 0)) as (root, _):
        address = root.metrics_address
        assert address is not None
        with trio.fail_after(30):
            while next(c for c in root.status().cells if c.name == "echo").state != "running":
                await trio.sleep(0.01)
        real = time.time
        for step in (3e8, -3e8):  # about ten years ahead, then behind
            monkeypatch.setattr(time, "time", lambda step=step: real() + step)
            reply = root.status()
            echo = next(c for c in reply.cells if c.name == "echo")
            assert 0 <= reply.uptime < 3600 and echo.uptime is not None
            assert 0 <= echo.uptime < 3600
            text = await scrape_until(address, lambda t: True)
            uptime = sample_value(text, "cellmesh_root_uptime_seconds")
            assert uptime is not None and 0 <= uptime < 3600, uptime
        monkeypatch.undo()


async def test_a_metrics_address_in_use_is_a_config_error_naming_the_option() -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    home = Path(tempfile.mkdtemp(prefix="cm-", dir="/tmp"))
    try:
        with pytest.raises(BaseExceptionGroup) as info:
            async with open_root(home, "", metrics=busy.getsockname()):
                raise AssertionError("must not start")
        (exc,) = [e for e in _leaves(info.value) if isinstance(e, ConfigError)]
        assert str(exc).startswith(f"--metrics: cannot listen on 127.0.0.1:{busy.getsockname()[1]}")
    finally:
        busy.close()


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in _leaves(e)]
    return [exc]
