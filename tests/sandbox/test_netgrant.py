"""Per-destination network grants: the spec, the route plan, the relay, and real bwrap cells.

The cell-side probes are small Python programs run as cells (as in
``test_escape.py``); they print one JSON object. Every negative check has a
positive control in the same cell: the granted listener is reached by the same
probe that fails to reach the listener that is not granted.
"""

from __future__ import annotations

import os
import socket
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cellmesh.config import Paths
from cellmesh.errors import ConfigError
from cellmesh.sandbox import (
    CellBackend,
    CellSpec,
    MemorySecretBroker,
    NetGrant,
    SandboxConfigError,
    StubBackend,
)
from cellmesh.sandbox._bwrap import bwrap_argv
from cellmesh.sandbox._net import (
    EGRESS_DIR_INSIDE,
    EgressProxy,
    grants_env,
    hosts_file,
    plan_routes,
)
from cellmesh.sandbox._netshim import STATUS_OK

from .conftest import make_backend, run_probe

PY = sys.executable
_SAFETY: float = 20.0  # seconds: a safety net only, never a synchronisation


# --------------------------------------------------------------- helpers


class EchoServer:
    """A host TCP listener on 127.0.0.1 echoing every byte until the client's EOF."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.accepted = 0
        self.finished: list[threading.Event] = []  # one per connection: its echo loop ended
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            done = threading.Event()
            self.finished.append(done)
            threading.Thread(target=self._echo, args=(conn, done), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket, done: threading.Event) -> None:
        try:
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)
        except OSError:
            pass
        finally:
            done.set()

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(_SAFETY)


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def other() -> Iterator[socket.socket]:
    """A second host listener that is never granted (nobody accepts: connects would queue)."""
    sock = socket.create_server(("127.0.0.1", 0))
    yield sock
    sock.close()


PROBE = """
import json, os, socket
def talk(host, port):
    try:
        s = socket.create_connection((host, port), timeout=5)
    except OSError as e:
        return {{"error": type(e).__name__}}
    try:
        s.sendall(b"ping " * 1000)
        s.shutdown(socket.SHUT_WR)  # the echo ends when it sees our EOF
        got = b""
        while chunk := s.recv(65536):
            got += chunk
        return {{"echo": got == b"ping " * 1000, "n": len(got)}}
    except OSError as e:
        return {{"error": type(e).__name__}}
    finally:
        s.close()
def resolve(name):
    try:
        return socket.getaddrinfo(name, 1, type=socket.SOCK_STREAM)[0][4][0]
    except OSError as e:
        return type(e).__name__
ifaces = sorted(line.split(":")[0].strip() for line in open("/proc/net/dev").readlines()[2:])
print(json.dumps({{
    "granted": talk({host!r}, {port}),
    "not_granted": talk("127.0.0.1", {other}),
    "ifaces": ifaces,
    "if_nameindex": [n for _, n in socket.if_nameindex()],
    "env": os.environ.get("CELL_NET_GRANTS"),
    "resolve_unknown": resolve("example.com"),
    "uid": os.getuid(),
}}))
raise SystemExit(7)
"""


# ------------------------------------------------------------------ spec


@pytest.mark.parametrize(
    ("host", "port", "problem"),
    [
        ("", 80, "non-empty"),
        ("db.internal", 0, "1..65535"),
        ("db.internal", 65536, "1..65535"),
        ("db.internal", True, "must be an int"),
        ("db.internal", "80", "must be an int"),
        ("bad host", 80, "valid host name"),
        ("-x.example", 80, "valid host name"),
        ("a" * 64 + ".example", 80, "valid host name"),
        ("10.0.0.300", 80, "not an IP address"),
        ("0.0.0.0", 80, "not a destination"),
        ("224.0.0.1", 80, "not a destination"),
        ("::", 80, "not a destination"),
        ("ff02::1", 80, "not a destination"),
        # IPv4-mapped: the same destinations in IPv6 clothing
        ("::ffff:0.0.0.0", 80, "not a destination"),
        ("::ffff:224.0.0.1", 80, "not a destination"),
    ],
)
def test_netgrant_rejects_bad_values(host: object, port: object, problem: str) -> None:
    with pytest.raises(SandboxConfigError, match=problem) as info:
        NetGrant(host=host, port=port)  # type: ignore[arg-type]
    assert isinstance(info.value, ConfigError)


def test_netgrant_parse_round_trips() -> None:
    for text in ("db.internal:5432", "127.0.0.1:80", "[::1]:8080", "10.1.2.3:443"):
        assert str(NetGrant.parse(text)) == text
    assert NetGrant.parse("[::1]:8080") == NetGrant(host="::1", port=8080)
    for bad in ("db.internal", "db:", ":80", "::1:80", "db:http", "db:-1", "db: 80"):
        with pytest.raises(SandboxConfigError) as info:
            NetGrant.parse(bad, source="--grant")
        assert info.value.source == "--grant"


def test_cellspec_grants_exclude_allow_net_and_duplicates() -> None:
    grant = NetGrant(host="db.internal", port=5432)
    with pytest.raises(SandboxConfigError, match="excludes net_grants"):
        CellSpec(name="x", argv=["true"], allow_net=True, net_grants=[grant])
    with pytest.raises(SandboxConfigError, match="granted twice"):
        CellSpec(
            name="x", argv=["true"], net_grants=[grant, NetGrant(host="DB.internal", port=5432)]
        )
    with pytest.raises(SandboxConfigError, match="not a NetGrant"):
        CellSpec(name="x", argv=["true"], net_grants=["db.internal:5432"])  # type: ignore[list-item]
    with pytest.raises(SandboxConfigError, match="more than 64"):
        CellSpec(
            name="x", argv=["true"], net_grants=[NetGrant(host="h", port=p) for p in range(1, 66)]
        )
    assert CellSpec(name="x", argv=["true"], net_grants=[grant]).net_grants == (grant,)


# ------------------------------------------------------------------ plan


def test_routes_keep_loopback_literals_and_alias_everything_else() -> None:
    grants = [
        NetGrant(host="127.0.0.2", port=5000),
        NetGrant(host="db.internal", port=5432),
        NetGrant(host="DB.internal", port=6432),
        NetGrant(host="10.1.2.3", port=443),
        NetGrant(host="localhost", port=8080),
    ]
    routes = plan_routes(grants)
    got = [(r.inside, r.inside_port, r.socket_name) for r in routes]
    assert got == [
        ("127.0.0.2", 5000, "0.sock"),
        ("127.0.0.3", 5432, "1.sock"),  # .2 is taken by the literal grant
        ("127.0.0.3", 6432, "2.sock"),  # one alias per host, names case-insensitive
        ("127.0.0.4", 10443, "3.sock"),  # a port < 1024 is served at 10000 + port
        ("127.0.0.5", 8080, "4.sock"),
    ]
    hosts = hosts_file(routes)
    assert "127.0.0.3\tdb.internal" in hosts
    assert "127.0.0.5\tlocalhost" in hosts
    assert "127.0.0.1\tlocalhost" not in hosts  # a granted localhost is the host's
    assert "10.1.2.3" not in hosts
    assert grants_env(routes).split()[3] == "10.1.2.3:443=127.0.0.4:10443"
    assert "127.0.0.1\tlocalhost" in hosts_file(plan_routes([NetGrant(host="db", port=1)]))
    with pytest.raises(SandboxConfigError, match="taken"):
        plan_routes([NetGrant(host="db", port=443), NetGrant(host="db", port=10443)])


def test_bwrap_argv_keeps_the_private_network_and_wraps_the_command(tmp_path: Path) -> None:
    grants = [NetGrant(host="db.internal", port=5432)]
    spec = CellSpec(name="g", argv=["/bin/app", "--flag"], net_grants=grants)
    proxy = EgressProxy.open(cell_id="g", net_dir=tmp_path / "net", grants=grants)
    try:
        mounts = proxy.mounts(spec.argv, PY)
        argv = bwrap_argv("/usr/bin/bwrap", spec, n_pass_fds=0, file_secrets=[],
                          tmpfs_bytes=1 << 20, egress=mounts)  # fmt: skip
    finally:
        proxy.close()
    assert "--unshare-net" in argv
    assert "--share-net" not in argv
    sock = str(tmp_path / "net" / "0.sock")
    assert argv[argv.index(sock) - 1 : argv.index(sock) + 2] == [
        "--bind", sock, f"{EGRESS_DIR_INSIDE}/0.sock",
    ]  # fmt: skip
    assert argv[argv.index("/etc/hosts") - 2] == "--ro-bind"
    command = argv[argv.index("--", argv.index("--chdir")) + 1 :]
    assert command[:3] == [PY, "-I", "-S"]
    assert command[command.index("--map") + 1] == f"127.0.0.2:5432={EGRESS_DIR_INSIDE}/0.sock"
    assert command[-3:] == ["--", "/bin/app", "--flag"]


# ----------------------------------------------------------- the relay


def _dial(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(_SAFETY)
    sock.connect(str(path))
    return sock


def test_proxy_relays_only_to_its_grant_and_bounds_connections(
    tmp_path: Path, echo: EchoServer
) -> None:
    grants = [NetGrant(host="127.0.0.1", port=echo.port)]
    proxy = EgressProxy.open(cell_id="p", net_dir=tmp_path / "net", grants=grants, max_conns=2)
    path = tmp_path / "net" / "0.sock"
    try:
        assert os.stat(tmp_path / "net").st_mode & 0o777 == 0o700
        assert os.stat(path).st_mode & 0o777 == 0o600
        first, second = _dial(path), _dial(path)
        for conn in (first, second):
            assert conn.recv(1) == STATUS_OK  # connected upstream: both slots in use
        over = _dial(path)
        assert over.recv(1) == b""  # beyond the bound: closed, no status (the shim resets)
        # Whatever the cell sends, the destination is the grant: no address is read.
        first.sendall(b"CONNECT 10.0.0.1:22 HTTP/1.1\r\n\r\n")
        first.shutdown(socket.SHUT_WR)  # half-close travels on: the echo ends, then we see EOF
        got = b""
        while chunk := first.recv(65536):
            got += chunk
        assert got == b"CONNECT 10.0.0.1:22 HTTP/1.1\r\n\r\n"
        first.close()
        # Both directions of `first` ended before its EOF reached us: its slot is free.
        third = _dial(path)
        assert third.recv(1) == STATUS_OK
        second.sendall(b"still here")
        assert second.recv(64) == b"still here"
    finally:
        proxy.close()
    assert not path.exists()
    assert not _egress_threads("p")
    assert all(done.wait(_SAFETY) for done in echo.finished)  # close ended every relay
    assert echo.accepted == 3


def test_proxy_sends_no_status_when_the_destination_refuses(tmp_path: Path) -> None:
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    proxy = EgressProxy.open(
        cell_id="r", net_dir=tmp_path / "net", grants=[NetGrant(host="127.0.0.1", port=port)]
    )
    try:
        assert _dial(tmp_path / "net" / "0.sock").recv(1) == b""
    finally:
        proxy.close()


# ---------------------------------------------------------- backends


def test_host_backend_refuses_grants(paths: Paths, broker: MemorySecretBroker) -> None:
    be = make_backend("host", paths, broker)
    spec = CellSpec(name="h", argv=["true"], net_grants=[NetGrant(host="db", port=5432)])
    with pytest.raises(SandboxConfigError, match="cannot limit a cell") as info:
        be.create(spec)
    assert info.value.source == "net_grants"
    assert not be.tracked()


def test_stub_backend_accepts_grants(broker: MemorySecretBroker) -> None:
    be = StubBackend(broker=broker)
    grant = NetGrant(host="db", port=5432)
    be.create(CellSpec(name="s", argv=["true"], net_grants=[grant]))
    be.spawn("s")
    assert be.wait("s").code == 0
    assert be.destroy("s").clean


def test_cell_reaches_exactly_its_grant(
    bwrap_backend: CellBackend, echo: EchoServer, other: socket.socket
) -> None:
    other_port = other.getsockname()[1]
    code = PROBE.format(host="127.0.0.1", port=echo.port, other=other_port)
    grants = [NetGrant(host="127.0.0.1", port=echo.port)]
    status, out = run_probe(bwrap_backend, "granted", code, net_grants=grants)
    assert status.code == 7  # the workload's own exit status, not the shim's
    assert out["granted"] == {"echo": True, "n": 5000}
    assert out["not_granted"] == {"error": "ConnectionRefusedError"}
    other.setblocking(False)
    with pytest.raises(BlockingIOError):
        other.accept()  # nothing ever reached the listener that is not granted
    assert out["ifaces"] == ["lo"]
    assert out["if_nameindex"] == ["lo"]
    assert out["resolve_unknown"] == "gaierror"  # no DNS from inside
    assert out["env"] == f"127.0.0.1:{echo.port}=127.0.0.1:{echo.port}"
    assert echo.accepted == 1


def test_grants_work_without_the_uid_drop_and_across_respawns(
    bwrap_path: str, paths: Paths, broker: MemorySecretBroker, echo: EchoServer
) -> None:
    """bwrap started as the caller (no staging), and a second spawn reusing the proxy."""
    be = make_backend("bwrap", paths, broker, bwrap_path, host_uid=None)
    code = f"""
    import socket
    s = socket.create_connection(("127.0.0.1", {echo.port}), timeout=5)
    s.sendall(b"hi")
    raise SystemExit(0 if s.recv(2) == b"hi" else 1)
    """
    grants = [NetGrant(host="127.0.0.1", port=echo.port)]
    be.create(CellSpec(name="twice", argv=[PY, "-c", textwrap.dedent(code)], net_grants=grants))
    try:
        for _ in range(2):
            be.spawn("twice", stdout=2, stderr=2)
            assert be.wait("twice", timeout=_SAFETY * 3).code == 0
    finally:
        be.destroy("twice", grace=1)
    assert echo.accepted == 2
    assert not _egress_threads("twice")


def test_cell_reaches_a_granted_name_through_etc_hosts(
    bwrap_backend: CellBackend, echo: EchoServer, other: socket.socket
) -> None:
    code = PROBE.format(host="localhost", port=echo.port, other=other.getsockname()[1])
    grants = [NetGrant(host="localhost", port=echo.port)]
    status, out = run_probe(bwrap_backend, "named", code, net_grants=grants)
    assert status.code == 7
    assert out["granted"] == {"echo": True, "n": 5000}  # resolved on the host, relayed
    assert out["not_granted"] == {"error": "ConnectionRefusedError"}
    assert out["env"] == f"localhost:{echo.port}=127.0.0.2:{echo.port}"


def test_cell_sees_a_refused_destination_as_a_reset(bwrap_backend: CellBackend) -> None:
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    code = f"""
    import json, socket
    s = socket.create_connection(("127.0.0.1", {port}), timeout=5)  # the shim accepts...
    try:
        print(json.dumps({{"read": s.recv(10).decode()}}))
    except OSError as e:
        print(json.dumps({{"error": type(e).__name__}}))  # ...and resets: refused upstream
    """
    grants = [NetGrant(host="127.0.0.1", port=port)]
    _, out = run_probe(bwrap_backend, "refused", code, net_grants=grants)
    assert out == {"error": "ConnectionResetError"}


def test_teardown_leaves_no_proxy_thread_process_or_socket(
    bwrap_backend: CellBackend, echo: EchoServer
) -> None:
    grants = [NetGrant(host="127.0.0.1", port=echo.port)]
    code = f"""
    import socket, sys, time
    s = socket.create_connection(("127.0.0.1", {echo.port}), timeout=5)
    s.sendall(b"ready")
    assert s.recv(5) == b"ready"
    print("ready", flush=True)
    time.sleep(600)  # holds a relayed connection open until destroyed
    """
    r, w = os.pipe()
    handle = bwrap_backend.create(
        CellSpec(name="held", argv=[PY, "-c", textwrap.dedent(code)], net_grants=grants)
    )
    try:
        bwrap_backend.spawn("held", stdout=w, stderr=2)
        os.close(w)
        with os.fdopen(r, "rb") as out:
            assert out.readline() == b"ready\n"  # a connection is being relayed right now
        assert handle.runtime_dir is not None
        net_dir = handle.runtime_dir / "net"
        assert (net_dir / "0.sock").exists()
        assert len(_forwarders(echo.port)) == 1  # the in-sandbox forwarder
        assert _egress_threads("held")
    finally:
        report = bwrap_backend.destroy("held", grace=1)
    assert report.clean
    assert not handle.runtime_dir.exists()
    assert not _egress_threads("held")
    assert not _forwarders(echo.port)
    assert echo.accepted == 1
    assert echo.finished[0].wait(_SAFETY)  # the relayed connection was closed too


def _egress_threads(cell_id: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(f"cellmesh-egress-{cell_id}")]


def _forwarders(port: int) -> list[int]:
    """Host pids of shim forwarders serving a grant to ``port`` (zombies have no cmdline)."""
    out: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[:3] == [PY.encode(), b"-I", b"-S"] and f"127.0.0.1:{port}=".encode() in argv[5]:
            out.append(int(entry))
    return out


def test_exec_grant_flag(
    bwrap_path: str, echo: EchoServer, capfd: pytest.CaptureFixture[str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from cellmesh.cli import main

    monkeypatch.setenv("CELL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CELL_CGROUP_PARENT", raising=False)
    code = (
        f"import socket; s = socket.create_connection(('localhost', {echo.port}));"
        "s.sendall(b'via-grant'); print(s.recv(9).decode())"
    )
    argv = ["sandbox", "exec", "--backend", "bwrap", "--grant", f"localhost:{echo.port}"]
    assert main([*argv, "--", PY, "-c", code]) == 0
    assert capfd.readouterr().out.strip() == "via-grant"
    rc = main(["sandbox", "exec", "--backend", "host", "--grant", "db:1", "--", "true"])
    assert rc != 0
    assert "net_grants" in capfd.readouterr().err
