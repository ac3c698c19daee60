"""cellmesh.toml: a full manifest parses to the expected values; each error names its key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import attrs
import pytest

from cellmesh.actors import stockdna
from cellmesh.actors.manifest import (
    CellDecl,
    Manifest,
    ManifestError,
    NetGrant,
    RootDecl,
    SupervisorDecl,
    load_manifest,
    manifest_from_dict,
    parse_manifest,
)
from cellmesh.actors.policy import Backoff, Restart, Shutdown, Strategy
from cellmesh.errors import ConfigError
from cellmesh.sandbox import Limits, SecretRef
from cellmesh.testing.purity import module_imports

APP = Path("/srv/app/cellmesh.toml")
FILE = Path("cellmesh.toml")

FULL = """
[root]
allow_spawn = true
sandbox = "bwrap"
restart_log = 50
log_max_bytes = "1M"
log_keep = 5

[supervisor]
strategy = "one_for_all"
intensity = 3
period = 10
backoff = {initial = 0.1, factor = 2.0, max = 5.0}

[cells.frontend]
dna = "cells"
entry = "cells.frontend:Frontend"
calls = ["store", "worker"]
network = ["example.com:443", "[::1]:80", "127.0.0.1:5432"]
limits = {memory = "256M", cpu = 0.5, pids = 64, open_files = 256}
env = {LOG_LEVEL = "debug"}
secrets = [
  {name = "API_TOKEN", key = "frontend.token"},
  {name = "TLS_PEM", key = "tls", deliver = "file", ttl = 60},
]
max_children = 4
templates = ["worker"]
start_timeout = 2.5

[supervisors.db]
strategy = "rest_for_one"
children = ["store", "indexer"]
restart = "transient"
shutdown = "infinity"

[cells.store]
dna = "store.py"
restart = "transient"
shutdown = 30
data = true
network = "host"

[cells.indexer]
dna = "/opt/indexer"
activation = "on_demand"
shutdown = "brutal_kill"
limits = {memory = 67108864}

[supervisors.pool]
strategy = "simple_one_for_one"
template = "worker"

[templates.worker]
dna = "worker.py"
restart = "temporary"
"""


def parse(text: str, path: Path = FILE) -> Manifest:
    return parse_manifest(textwrap.dedent(text), path=path)


def error(text: str, path: Path = FILE) -> ManifestError:
    with pytest.raises(ManifestError) as info:
        parse(text, path)
    return info.value


def test_manifest_full_example_parses_to_expected_values() -> None:
    m = parse(FULL, APP)
    assert m.path == APP
    assert m.root == RootDecl(
        allow_spawn=True, sandbox="bwrap", restart_log=50, log_max_bytes=1 << 20, log_keep=5
    )
    assert m.top == SupervisorDecl(
        name="root",
        strategy=Strategy.ONE_FOR_ALL,
        intensity=3,
        period=10.0,
        backoff=Backoff(initial=0.1, factor=2.0, maximum=5.0),
        children=("frontend", "db", "pool"),
    )
    assert list(m.supervisors) == ["db", "pool"]
    assert m.supervisors["db"] == SupervisorDecl(
        name="db",
        strategy=Strategy.REST_FOR_ONE,
        children=("store", "indexer"),
        restart=Restart.TRANSIENT,
        shutdown=Shutdown.infinity(),
    )
    assert m.supervisors["pool"] == SupervisorDecl(
        name="pool", strategy=Strategy.SIMPLE_ONE_FOR_ONE, template="worker"
    )
    assert list(m.cells) == ["frontend", "store", "indexer"]
    assert m.cells["frontend"] == CellDecl(
        name="frontend",
        dna=Path("/srv/app/cells"),
        entry="cells.frontend:Frontend",
        calls=("store", "worker"),
        network=(
            NetGrant(host="example.com", port=443),
            NetGrant(host="::1", port=80),
            NetGrant(host="127.0.0.1", port=5432),
        ),
        limits=Limits(memory=256 << 20, cpu=0.5, pids=64, open_files=256),
        env=(("LOG_LEVEL", "debug"),),
        secrets=(
            SecretRef(name="API_TOKEN", key="frontend.token"),
            SecretRef(name="TLS_PEM", key="tls", deliver="file", ttl=60.0),
        ),
        max_children=4,
        templates=("worker",),
        start_timeout=2.5,
    )
    store = m.cells["store"]
    assert store.dna == Path("/srv/app/store.py")
    assert (store.restart, store.shutdown) == (Restart.TRANSIENT, Shutdown.timeout(30))
    assert (store.data, store.network) == (True, "host")
    indexer = m.cells["indexer"]
    assert indexer.dna == Path("/opt/indexer")
    assert (indexer.activation, indexer.shutdown) == ("on_demand", Shutdown.brutal_kill())
    assert indexer.limits == Limits(memory=64 << 20)
    assert m.templates == {
        "worker": CellDecl(
            name="worker",
            dna=Path("/srv/app/worker.py"),
            restart=Restart.TEMPORARY,
            is_template=True,
        )
    }
    assert [str(g) for g in m.cells["frontend"].network] == [
        "example.com:443",
        "[::1]:80",
        "127.0.0.1:5432",
    ]


def test_manifest_parent_of_names_the_supervisor() -> None:
    m = parse(FULL)
    assert m.parent_of("frontend") == "root"
    assert m.parent_of("db") == "root"
    assert m.parent_of("store") == "db"
    assert m.parent_of("indexer") == "db"
    for name in ("worker", "root", "nope"):
        with pytest.raises(KeyError):
            m.parent_of(name)


def test_manifest_defaults() -> None:
    m = parse('[cells.a]\ndna = "a.py"\n', APP)
    assert m.root == RootDecl()
    assert (m.root.allow_spawn, m.root.sandbox, m.root.restart_log) == (False, None, 200)
    assert (m.root.log_max_bytes, m.root.log_keep) == (10 << 20, 3)
    assert m.top == SupervisorDecl(name="root", children=("a",))
    assert (m.top.strategy, m.top.intensity, m.top.period) == (Strategy.ONE_FOR_ONE, 1, 5.0)
    assert (m.top.backoff, m.top.restart, m.top.shutdown) == (None, Restart.PERMANENT, None)
    a = m.cells["a"]
    assert a == CellDecl(name="a", dna=Path("/srv/app/a.py"))
    assert (a.entry, a.restart, a.shutdown, a.activation) == (
        None,
        Restart.PERMANENT,
        None,
        "eager",
    )
    assert (a.calls, a.env, a.limits, a.secrets) == ((), (), Limits(), ())
    assert (a.data, a.network, a.max_children, a.templates) == (False, "none", 0, ())
    assert (a.start_timeout, a.is_template) == (10.0, False)
    assert m.supervisors == {}
    assert m.templates == {}


def test_manifest_empty_text_is_an_empty_manifest() -> None:
    m = parse("")
    assert m.top == SupervisorDecl(name="root")
    assert (dict(m.cells), dict(m.supervisors), dict(m.templates)) == ({}, {}, {})


def test_manifest_relative_path_resolves_dna_against_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    m = parse('[cells.a]\ndna = "a.py"\n', Path("sub/cellmesh.toml"))
    assert m.cells["a"].dna == tmp_path / "sub" / "a.py"
    assert m.path == Path("sub/cellmesh.toml")


def test_manifest_root_children_default_to_unlisted_in_file_order() -> None:
    m = parse(
        """
        [supervisors.s1]
        children = ["c2"]
        [supervisors.s2]
        [cells.c1]
        dna = "c1.py"
        [cells.c2]
        dna = "c2.py"
        [cells.c3]
        dna = "c3.py"
        """
    )
    assert m.top.children == ("s1", "s2", "c1", "c3")
    assert m.supervisors["s1"].children == ("c2",)


def test_manifest_explicit_root_children_are_kept_in_order() -> None:
    m = parse(
        """
        [supervisor]
        children = ["b", "a"]
        [cells.a]
        dna = "a.py"
        [cells.b]
        dna = "b.py"
        """
    )
    assert m.top.children == ("b", "a")


def test_manifest_mappings_are_read_only() -> None:
    m = parse(FULL)
    with pytest.raises(TypeError):
        m.cells["x"] = m.cells["store"]  # type: ignore[index]


def test_manifest_error_fields_and_text() -> None:
    e = error('[cells.db]\ndna = "db.py"\nrestart = "forever"\n')
    assert isinstance(e, ConfigError)
    assert (e.file, e.key) == ("cellmesh.toml", "cells.db.restart")
    assert e.problem == "expected one of 'permanent', 'transient', 'temporary', got 'forever'"
    assert str(e) == (
        "cellmesh.toml: cells.db.restart: "
        "expected one of 'permanent', 'transient', 'temporary', got 'forever'"
    )


def test_manifest_syntax_error_has_line_and_column() -> None:
    e = error('[cells.a]\ndna = "a.py"\nrestart = \n')
    assert (e.file, e.key) == ("cellmesh.toml", "(syntax)")
    assert "line 3" in e.problem


def test_manifest_huge_integer_literal_is_a_syntax_error() -> None:
    e = error("[root]\nrestart_log = " + "9" * 5000 + "\n")
    assert e.key == "(syntax)"


def test_manifest_deep_nesting_is_a_syntax_error() -> None:
    e = error("x = " + "[" * 5000)
    assert e.key == "(syntax)"


CELL = '[cells.db]\ndna = "db.py"\n'


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        # unknown keys, with the allowed list and a suggestion
        ("[cell.a]\n", "cell", "did you mean 'cells'?"),
        ("[root]\nallow_spawns = true\n", "root.allow_spawns", "allowed keys: allow_spawn"),
        (CELL + "restat = 'transient'\n", "cells.db.restat", "did you mean 'restart'?"),
        (CELL + "limits = {mem = 1}\n", "cells.db.limits.mem", "memory, cpu, pids, open_files"),
        ("[supervisor]\nrestart = 'permanent'\n", "supervisor.restart", "unknown key"),
        ("[supervisor]\ntemplate = 'w'\n", "supervisor.template", "unknown key"),
        (
            "[templates.w]\ndna = 'w.py'\nactivation = 'eager'\n",
            "templates.w.activation",
            "unknown key",
        ),
        (
            CELL + "secrets = [{name = 'A', key = 'k', ttl = 1, mode = 'x'}]\n",
            "cells.db.secrets[0].mode",
            "unknown key",
        ),
        (
            "[supervisors.s]\nbackoff = {initial = 1, maximum = 2}\n",
            "supervisors.s.backoff.maximum",
            "allowed keys: initial, factor, max",
        ),
        # missing required keys
        ("[cells.db]\nentry = 'a:B'\n", "cells.db.dna", "is required"),
        (CELL + "secrets = [{name = 'A'}]\n", "cells.db.secrets[0].key", "is required"),
        (
            "[supervisors.s]\nbackoff = {factor = 2}\n",
            "supervisors.s.backoff.initial",
            "is required",
        ),
        # wrong types: expected vs got; bool is not an int
        ("[root]\nrestart_log = true\n", "root.restart_log", "got boolean True"),
        ("[root]\nallow_spawn = 1\n", "root.allow_spawn", "expected a boolean, got integer 1"),
        (CELL + "data = 'yes'\n", "cells.db.data", "expected a boolean, got string 'yes'"),
        (CELL + "max_children = 1.5\n", "cells.db.max_children", "got float 1.5"),
        (CELL + "calls = 'x'\n", "cells.db.calls", "expected an array of names, got string"),
        (CELL + "calls = [1]\n", "cells.db.calls[0]", "expected a string, got integer 1"),
        (CELL + "env = {A = 1}\n", "cells.db.env.A", "expected a string, got integer 1"),
        (CELL + "limits = 5\n", "cells.db.limits", "expected a table, got integer 5"),
        (CELL + "limits = {pids = true}\n", "cells.db.limits.pids", "got boolean True"),
        (CELL + "limits = {cpu = true}\n", "cells.db.limits.cpu", "got boolean True"),
        (CELL + "shutdown = true\n", "cells.db.shutdown", "got boolean True"),
        (CELL + "secrets = {name = 'A'}\n", "cells.db.secrets", "expected an array of tables"),
        (CELL + "secrets = [1]\n", "cells.db.secrets[0]", "expected a table, got integer 1"),
        ("[cells]\ndb = 1\n", "cells.db", "expected a table, got integer 1"),
        ("cells = 1\n", "cells", "expected a table, got integer 1"),
        ("[supervisor]\nintensity = false\n", "supervisor.intensity", "got boolean False"),
        ("[supervisor]\nchildren = 'a'\n", "supervisor.children", "expected an array"),
        ("[cells.db]\ndna = 1\n", "cells.db.dna", "expected a string, got integer 1"),
        (CELL + "start_timeout = 'soon'\n", "cells.db.start_timeout", "got string 'soon'"),
        (CELL + "restart = 1\n", "cells.db.restart", "got integer 1"),
        # ranges and formats
        (CELL + "shutdown = -1\n", "cells.db.shutdown", "expected a finite number >= 0"),
        (CELL + "shutdown = inf\n", "cells.db.shutdown", "expected a finite number"),
        (CELL + "shutdown = 'forever'\n", "cells.db.shutdown", "'brutal_kill' or 'infinity'"),
        (CELL + "start_timeout = 0\n", "cells.db.start_timeout", "> 0"),
        (CELL + "start_timeout = nan\n", "cells.db.start_timeout", "finite"),
        (CELL + "max_children = -1\n", "cells.db.max_children", "from 0 to"),
        (CELL + "activation = 'lazy'\n", "cells.db.activation", "'eager', 'on_demand'"),
        (CELL + "entry = 'cells..db:Db'\n", "cells.db.entry", "module:Class"),
        (CELL + "entry = 'class:Db'\n", "cells.db.entry", "module:Class"),
        (CELL + "entry = 'db:Db:X'\n", "cells.db.entry", "module:Class"),
        ("[cells.db]\ndna = ''\n", "cells.db.dna", "is not a path"),
        (CELL + "limits = {memory = '12 parsecs'}\n", "cells.db.limits.memory", "not a size"),
        (CELL + "limits = {memory = 256}\n", "cells.db.limits.memory",
         '256 bytes is too small to start a cell (at least 32M); a bare number is bytes: '
         'did you mean "256M"?'),
        (CELL + "limits = {memory = '31M'}\n", "cells.db.limits.memory",
         "32505856 bytes is too small to start a cell (at least 32M)"),
        (CELL + "limits = {pids = 3}\n", "cells.db.limits.pids",
         "3 processes and threads is too small to start a cell (at least 4)"),
        (CELL + "limits = {open_files = 31}\n", "cells.db.limits.open_files",
         "31 descriptors is too small to start a cell (at least 32)"),
        (CELL + "limits = {memory = 0}\n", "cells.db.limits.memory", "from 1 to"),
        (CELL + "limits = {cpu = 0}\n", "cells.db.limits.cpu", "> 0"),
        (CELL + "limits = {cpu = 0.001}\n", "cells.db.limits.cpu", "at least 0.01 cores"),
        (CELL + "limits = {cpu = 1e308}\n", "cells.db.limits.cpu", "at most 4,096 cores"),
        (CELL + "limits = {pids = 99999999999999999}\n", "cells.db.limits.pids",
         "at most 4,194,304 processes and threads"),
        (CELL + "limits = {open_files = 10000000000}\n", "cells.db.limits.open_files",
         "at most 1,048,576 descriptors"),
        (CELL + "limits = {memory = '2000T'}\n", "cells.db.limits.memory", "at most"),
        (CELL + "limits = {open_files = 0}\n", "cells.db.limits.open_files", "from 1 to"),
        (CELL + "env = {'A=B' = 'x'}\n", "cells.db.env", "contains '='"),
        (CELL + "env = {HOME = '/srv'}\n", "cells.db.env.HOME", "is set by the runtime"),
        (CELL + "env = {CELL_NAME = 'x'}\n", "cells.db.env.CELL_NAME", "is set by the runtime"),
        (CELL + "env = {PYTHONUNBUFFERED = '0'}\n", "cells.db.env.PYTHONUNBUFFERED",
         "is set by the runtime"),
        (CELL + "env = {CELL_SECRET_FILE_X = 'y'}\n", "cells.db.env.CELL_SECRET_FILE_X",
         "is set by the runtime"),
        # a cell out of memory inside cbor2 would hang printing the Rust panic's backtrace
        (CELL + "env = {RUST_BACKTRACE = '1'}\n", "cells.db.env.RUST_BACKTRACE",
         "instead of exiting 137"),
        (CELL + "env = {RUST_LIB_BACKTRACE = 'full'}\n", "cells.db.env.RUST_LIB_BACKTRACE",
         "instead of exiting 137"),
        # read by the cell's runtime: found at load, not when the cell fails to start
        (CELL + "env = {CELL_SPIN_US = 'abc'}\n", "cells.db.env.CELL_SPIN_US",
         "must be a whole number of microseconds from 0 to 10000"),
        (CELL + "env = {CELL_SPIN_US = '99999'}\n", "cells.db.env.CELL_SPIN_US",
         "must be at most 10000 microseconds, got 99999"),
        (
            CELL + "secrets = [{name = 'a-b', key = 'k'}]\n",
            "cells.db.secrets[0].name",
            "must match",
        ),
        (CELL + "secrets = [{name = 'A', key = 'a/b'}]\n", "cells.db.secrets[0].key", "'/'"),
        (
            CELL + "secrets = [{name = 'A', key = 'k', deliver = 'post'}]\n",
            "cells.db.secrets[0].deliver",
            "expected one of 'env', 'file', got 'post'",
        ),
        (CELL + "secrets = [{name = 'A', key = 'k', ttl = 0}]\n", "cells.db.secrets[0].ttl", "> 0"),
        (
            CELL + "secrets = [{name = 'A', key = 'k'}, {name = 'A', key = 'j'}]\n",
            "cells.db.secrets[1].name",
            "declared twice",
        ),
        (
            CELL + "env = {A = 'x'}\nsecrets = [{name = 'A', key = 'k'}]\n",
            "cells.db.secrets[0].name",
            "also set in env",
        ),
        *(  # the secret would replace the runtime's value (a cell named by its secret)
            (CELL + f"secrets = [{{name = '{name}', key = 'k'}}]\n",
             "cells.db.secrets[0].name", "is set by the runtime in every cell")
            for name in ("CELL_NAME", "HOME", "PYTHONUNBUFFERED", "CELL_SECRET_FILE_X")
        ),
        ("[root]\nsandbox = 'docker'\n", "root.sandbox", "'auto', 'bwrap', 'host', 'stub'"),
        ("[root]\nrestart_log = 0\n", "root.restart_log", "from 1 to"),
        ("[root]\nlog_keep = 0\n", "root.log_keep", "from 1 to"),
        ("[root]\nlog_max_bytes = -5\n", "root.log_max_bytes", "from 1 to"),
        ("[root]\nlog_max_bytes = '0'\n", "root.log_max_bytes", "greater than zero"),
        ("[supervisor]\nstrategy = 'all_for_one'\n", "supervisor.strategy", "'one_for_one'"),
        ("[supervisor]\nintensity = -1\n", "supervisor.intensity", "from 0 to"),
        ("[supervisor]\nperiod = 0\n", "supervisor.period", "> 0"),
        (
            "[supervisor]\nbackoff = {initial = 1, factor = 0.5}\n",
            "supervisor.backoff.factor",
            ">= 1",
        ),
        (
            "[supervisor]\nbackoff = {initial = 2, max = 1}\n",
            "supervisor.backoff",
            "maximum >= initial",
        ),
        ("[supervisors.s]\nshutdown = 'later'\n", "supervisors.s.shutdown", "'infinity'"),
        ("[supervisors.s]\nrestart = 'always'\n", "supervisors.s.restart", "got 'always'"),
    ],
)
def test_manifest_error_names_key_and_problem(text: str, key: str, fragment: str) -> None:
    e = error(text)
    assert e.file == "cellmesh.toml"
    assert e.key == key, str(e)
    assert fragment in e.problem, str(e)
    assert str(e) == f"cellmesh.toml: {key}: {e.problem}"


@pytest.mark.parametrize(
    ("grant", "fragment"),
    [
        ("example.com", "not HOST:PORT"),
        (":80", "must be a non-empty"),
        ("example.com:0", "not in 1..65535"),
        ("example.com:65536", "not in 1..65535"),
        ("example.com:http", "not HOST:PORT"),
        ("example.com:", "not HOST:PORT"),
        ("::1:80", "write an IPv6 host as [addr]:port"),
        ("[::1]", "write an IPv6 host as [addr]:port"),
        ("[not:v6]:80", "not an IP address"),
        ("256.1.1.1:80", "not an IP address"),
        ("-bad.example:80", "not a valid host name"),
        ("-under_score.example:80", "not a valid host name"),
        ("example.com.:80", "not a valid host name"),
        ("0.0.0.0:80", "not a destination address"),
        ("[::]:80", "not a destination address"),
        ("224.0.0.1:80", "not a destination address"),
        ("EXAMPLE.org:1", "granted twice"),
        ("a b:80", "not a valid host name"),
        ("x" * 64 + ".com:80", "not a valid host name"),
    ],
)
def test_manifest_bad_network_grant_is_rejected(grant: str, fragment: str) -> None:
    e = error(CELL + f"network = ['example.org:1', {grant!r}]\n")
    assert e.key == "cells.db.network[1]"
    assert fragment in e.problem, str(e)


def test_manifest_network_variants() -> None:
    m = parse(CELL + "network = ['_srv.LOCALHOST:8080', '10.0.0.1:1', '[fe80::1]:65535']\n")
    assert m.cells["db"].network == (
        NetGrant(host="_srv.LOCALHOST", port=8080),
        NetGrant(host="10.0.0.1", port=1),
        NetGrant(host="fe80::1", port=65535),
    )
    assert parse(CELL + "network = []\n").cells["db"].network == "none"
    e = error(CELL + "network = 'all'\n")
    assert (e.key, e.problem) == (
        "cells.db.network",
        "expected 'none', 'host' or an array of 'host:port', got 'all'",
    )
    e = error(CELL + "network = ['a.com:1', 'a.com:1']\n")
    assert (e.key, e.problem) == ("cells.db.network[1]", "'a.com:1' is listed twice (also at [0])")
    many = ", ".join(f"'h{i}.example:1'" for i in range(65))
    e = error(CELL + f"network = [{many}]\n")
    assert (e.key, e.problem) == ("cells.db.network", "more than 64 grants")


def test_manifest_cell_names_are_validated_and_reserved() -> None:
    e = error('[cells."bad name"]\ndna = "x.py"\n')
    assert e.key == 'cells."bad name"'
    assert "not a valid cell name" in e.problem
    for reserved in ("mitosis", "root"):
        e = error(f'[cells.{reserved}]\ndna = "x.py"\n')
        assert (e.key, e.problem) == (f"cells.{reserved}", f"{reserved!r} is reserved")
    e = error("[supervisors.mitosis]\n")
    assert e.key == "supervisors.mitosis"


def test_manifest_names_the_root_would_reject_are_refused_at_load() -> None:
    # `a` runs its standby as `a..b`: a cell named `a..b` would collide with it.
    e = error('[cells.a]\ndna = "x.py"\n[cells."a..b"]\ndna = "x.py"\n')
    assert e.key == 'cells."a..b"'
    assert "'..' is reserved" in e.problem
    for section in ("templates", "supervisors"):
        assert "'..' is reserved" in error(f'[{section}."x..y"]\ndna = "x.py"\n').problem


def test_manifest_and_root_share_one_name_rule() -> None:
    from cellmesh.config import check_mesh_cell_name

    for name in ("a..b", "mitosis", "-x", "x" * 64, "a b"):
        with pytest.raises(ConfigError) as info:
            check_mesh_cell_name(name)
        key = f'cells."{name}"' if name != "mitosis" else "cells.mitosis"
        assert error(f'[cells.{key.removeprefix("cells.")}]\ndna = "x.py"\n').problem == (
            info.value.problem
        )


def test_manifest_socket_paths_too_long_for_the_socket_dir_name_the_cell(tmp_path: Path) -> None:
    from cellmesh.config import Paths

    m = parse('[cells.' + "c" * 60 + ']\ndna = "x.py"\n', FILE)
    paths = Paths.from_env({"CELL_HOME": str(tmp_path), "CELL_SOCKET_DIR": "/tmp/" + "d" * 30})
    with pytest.raises(ManifestError) as info:
        m.check_sockets(paths)
    assert info.value.key == "cells." + "c" * 60
    assert "umbilical" in info.value.problem or "longer than" in info.value.problem


def test_manifest_socket_paths_of_a_replicated_cell_are_its_replicas(tmp_path: Path) -> None:
    """A replicated cell's umbilicals are its replicas' (X..<id>) and it has peer sockets."""
    from cellmesh.config import Paths

    name = "r" * 40
    m = parse(f'[cells.{name}]\ndna = "x.py"\nreplicas = 7\n', FILE)
    # room for <dir>/<name>.sock (46 more bytes), not for <dir>/.umbilical/<name>..6/mitosis.sock
    socket_dir = "/tmp/" + "d" * (107 - 46 - 5 - 5)
    paths = Paths.from_env({"CELL_HOME": str(tmp_path), "CELL_SOCKET_DIR": socket_dir})
    paths.socket_path(name)
    with pytest.raises(ManifestError) as info:
        m.check_sockets(paths)
    assert info.value.key == f"cells.{name}"
    assert f"/.umbilical/{name}..6/mitosis.sock" in info.value.problem


def test_manifest_dotted_names_are_quoted_in_key_paths() -> None:
    e = error('[cells."a.b"]\ndna = "x.py"\nrestart = "x"\n')
    assert e.key == 'cells."a.b".restart'


def test_manifest_names_share_one_namespace() -> None:
    e = error('[cells.x]\ndna = "x.py"\n[templates.x]\ndna = "x.py"\n')
    assert e.key == "templates.x"
    assert "already the name of a cell" in e.problem
    e = error('[templates.x]\ndna = "x.py"\n[supervisors.x]\n')
    assert e.key == "supervisors.x"
    assert "already the name of a template" in e.problem


def test_manifest_unknown_child_names_its_index() -> None:
    e = error(CELL + '[supervisors.s]\nchildren = ["db", "x"]\n')
    assert (e.key, e.problem) == ("supervisors.s.children[1]", "no cell or supervisor named 'x'")


def test_manifest_child_errors() -> None:
    e = error('[templates.w]\ndna = "w.py"\n[supervisors.s]\nchildren = ["w"]\n')
    assert e.key == "supervisors.s.children[0]"
    assert "is a template" in e.problem
    e = error('[supervisors.s]\nchildren = ["root"]\n')
    assert e.key == "supervisors.s.children[0]"
    e = error('[supervisors.s]\nchildren = ["s"]\n')
    assert (e.key, e.problem) == (
        "supervisors.s.children[0]",
        "supervisor 's' cannot be its own child",
    )
    e = error(CELL + '[supervisors.s]\nchildren = ["db", "db"]\n')
    assert (e.key, e.problem) == ("supervisors.s.children[1]", "'db' is listed twice (also at [0])")


def test_manifest_child_under_two_supervisors_names_both() -> None:
    e = error(CELL + '[supervisors.a]\nchildren = ["db"]\n[supervisors.b]\nchildren = ["db"]\n')
    assert e.key == "supervisors.b.children[0]"
    assert "supervisor 'a'" in e.problem
    assert "supervisor 'b'" in e.problem
    e = error(CELL + '[supervisor]\nchildren = ["db", "a"]\n[supervisors.a]\nchildren = ["db"]\n')
    assert e.key == "supervisors.a.children[0]"
    assert "supervisor 'root' and supervisor 'a'" in e.problem


def test_manifest_supervisor_cycle_is_rejected() -> None:
    e = error('[supervisors.a]\nchildren = ["b"]\n[supervisors.b]\nchildren = ["a"]\n')
    assert e.key in ("supervisors.a.children", "supervisors.b.children")
    assert "cycle" in e.problem
    assert "'a' is a child of 'b', which is a child of 'a'" in e.problem


def test_manifest_supervisor_three_cycle_is_rejected() -> None:
    e = error(
        """
        [supervisors.x]
        [supervisors.a]
        children = ["b", "x"]
        [supervisors.b]
        children = ["c"]
        [supervisors.c]
        children = ["a"]
        """
    )
    assert (e.key, e.problem) == (
        "supervisors.a.children",
        "supervisors form a cycle: 'a' is a child of 'c', which is a child of 'b', "
        "which is a child of 'a'",
    )


def test_manifest_explicit_root_children_must_cover_everything() -> None:
    e = error(CELL + '[cells.other]\ndna = "o.py"\n[supervisor]\nchildren = ["db"]\n')
    assert e.key == "cells.other"
    assert "under no supervisor" in e.problem
    e = error("[supervisors.s]\n[supervisor]\nchildren = []\n")
    assert e.key == "supervisors.s"


def test_manifest_calls_must_name_cells_or_templates() -> None:
    e = error(CELL + 'calls = ["nope"]\n')
    assert (e.key, e.problem) == ("cells.db.calls[0]", "no cell or template named 'nope'")
    e = error(CELL + 'calls = ["s"]\n[supervisors.s]\n')
    assert e.key == "cells.db.calls[0]"
    assert "is a supervisor" in e.problem
    m = parse(CELL + 'calls = ["w", "db"]\n[templates.w]\ndna = "w.py"\n')
    assert m.cells["db"].calls == ("w", "db")


def test_manifest_templates_need_declaration_and_quota() -> None:
    e = error(CELL + 'max_children = 1\ntemplates = ["w"]\n')
    assert e.key == "cells.db.templates[0]"
    assert "not declared" in e.problem
    e = error(CELL + 'max_children = 1\ntemplates = ["db"]\n')
    assert e.key == "cells.db.templates[0]"
    assert "is a cell" in e.problem
    e = error(CELL + 'templates = ["w"]\n[templates.w]\ndna = "w.py"\n')
    assert (e.key, e.problem) == ("cells.db.templates", "needs max_children > 0 to start any child")


def test_manifest_simple_one_for_one_rules() -> None:
    e = error('[supervisors.p]\nstrategy = "simple_one_for_one"\n')
    assert (e.key, e.problem) == ("supervisors.p.template", "is required for simple_one_for_one")
    e = error('[supervisors.p]\nstrategy = "simple_one_for_one"\ntemplate = "nope"\n')
    assert (e.key, e.problem) == ("supervisors.p.template", "no template named 'nope'")
    tmpl = '[templates.w]\ndna = "w.py"\n'
    e = error(tmpl + CELL + '[supervisors.p]\nstrategy = "simple_one_for_one"\n'
              'template = "w"\nchildren = ["db"]\n')  # fmt: skip
    assert e.key == "supervisors.p.children"
    e = error(tmpl + '[supervisors.p]\ntemplate = "w"\n')
    assert (e.key, e.problem) == (
        "supervisors.p.template",
        "only a simple_one_for_one supervisor has one",
    )
    e = error(tmpl + '[supervisors.p]\nstrategy = "simple_one_for_one"\ntemplate = "w"\n'
              '[supervisors.q]\nstrategy = "simple_one_for_one"\ntemplate = "w"\n')
    assert (e.key, e.problem) == (
        "supervisors.q.template",
        "template 'w' already has the pool supervisor 'p'; a template has at most one pool",
    )
    e = error('[supervisor]\nstrategy = "simple_one_for_one"\n')
    assert e.key == "supervisor.strategy"
    assert e.problem == "the top supervisor cannot be simple_one_for_one"
    # a bad value lists only what the top supervisor may take
    e = error('[supervisor]\nstrategy = "one_for_none"\n')
    assert (e.key, e.problem) == ("supervisor.strategy", "expected one of 'one_for_one', "
                                  "'one_for_all', 'rest_for_one', got 'one_for_none'")
    e = error('[supervisors.p]\nstrategy = "one_for_none"\n')
    assert "'simple_one_for_one'" in e.problem  # a nested one may be


def test_manifest_replicas_declares_a_replicated_cell_with_data() -> None:
    m = parse_manifest(CELL + "replicas = 3\n", path=FILE)
    db = m.cells["db"]
    assert (db.replicas, db.replicated, db.data, db.activation) == (3, True, True, "eager")
    m = parse_manifest(CELL + "replicas = 1\ndata = true\nstandby = false\n", path=FILE)
    assert (m.cells["db"].replicas, m.cells["db"].standby) == (1, False)
    plain = parse_manifest(CELL, path=FILE).cells["db"]
    assert (plain.replicas, plain.replicated, plain.data) == (None, False, False)


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        (CELL + "replicas = 4\n", "cells.db.replicas", "expected an odd number from 1 to 7, got 4"),
        (CELL + "replicas = 9\n", "cells.db.replicas", "expected an odd number from 1 to 7, got 9"),
        (CELL + "replicas = 0\n", "cells.db.replicas", "expected an odd number from 1 to 7, got 0"),
        (CELL + "replicas = -3\n", "cells.db.replicas",
         "expected an odd number from 1 to 7, got -3"),
        (CELL + "replicas = true\n", "cells.db.replicas",
         "expected an odd number from 1 to 7, got boolean True"),
        (CELL + "replicas = 3.0\n", "cells.db.replicas",
         "expected an odd number from 1 to 7, got float 3.0"),
        (CELL + "replicas = '3'\n", "cells.db.replicas",
         "expected an odd number from 1 to 7, got string '3'"),
        (CELL + "replicas = 3\nactivation = 'on_demand'\n", "cells.db.activation",
         "a replicated cell (replicas = 3) cannot be 'on_demand': every replica runs from the "
         "start to keep the group's quorum"),
        (CELL + "replicas = 3\ndata = false\n", "cells.db.data",
         "a replicated cell (replicas = 3) always has data: one directory per replica holds "
         "its log; remove data = false"),
        (CELL + "replicas = 5\nmax_children = 2\n", "cells.db.max_children",
         "a replicated cell (replicas = 5) cannot start dynamic children"),
        ("[templates.w]\ndna = 'w.py'\nreplicas = 3\n", "templates.w.replicas",
         "a template cannot be replicated (its instances are single processes started at run "
         "time); declare a replicated cell under [cells]"),
        (f"[cells.{'d' * 48}]\ndna = 'db.py'\nreplicas = 3\n", f"cells.{'d' * 48}",
         "a replicated cell's name is at most 47 characters (its replicas' logs are named "
         "<name>..<id>), got 48"),
    ],
)  # fmt: skip
def test_manifest_replicas_refusals_name_the_key(text: str, key: str, problem: str) -> None:
    e = error(text)
    assert (e.key, e.problem) == (key, problem)
    assert str(e) == f"{FILE}: {key}: {problem}"


def test_manifest_from_dict_rejects_non_tables() -> None:
    with pytest.raises(ManifestError) as info:
        manifest_from_dict([], path=FILE)  # type: ignore[arg-type]
    assert info.value.key == "(top level)"
    with pytest.raises(ManifestError) as info:
        manifest_from_dict({"cells": {1: {}}}, path=FILE)
    assert info.value.key == "cells"


# --------------------------------------------------------------------------
# load_manifest and check_paths touch the file system.


def test_load_manifest_reads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cellmesh.toml"
    path.write_text('[cells.a]\ndna = "a.py"\n', encoding="utf-8")
    m = load_manifest(path)
    assert m.cells["a"].dna == tmp_path / "a.py"
    assert load_manifest(str(path)).path == path


def test_load_manifest_missing_file_is_a_manifest_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert (info.value.file, info.value.key) == (str(path), "(file)")
    assert "cannot read" in info.value.problem


def test_load_manifest_rejects_bad_utf8(tmp_path: Path) -> None:
    path = tmp_path / "cellmesh.toml"
    path.write_bytes(b'x = "\xff"\n')
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert info.value.key == "(syntax)"


def _layout(tmp_path: Path) -> Path:
    (tmp_path / "mod.py").write_text("", encoding="utf-8")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("", encoding="utf-8")
    path = tmp_path / "cellmesh.toml"
    path.write_text(
        '[cells.a]\ndna = "mod.py"\n[cells.b]\ndna = "pkg"\n[templates.w]\ndna = "mod.py"\n',
        encoding="utf-8",
    )
    return path


def test_manifest_check_paths_accepts_module_and_package(tmp_path: Path) -> None:
    load_manifest(_layout(tmp_path)).check_paths()


@pytest.mark.parametrize(
    ("dna", "fragment"),
    [
        ("missing.py", "cannot be read"),
        ("notes.txt", "not a module"),
        ("bare", "without __init__.py"),
        ("link.py", "symlink"),
        ("bad-name", "identifier"),
    ],
)
def test_manifest_check_paths_rejects(tmp_path: Path, dna: str, fragment: str) -> None:
    path = _layout(tmp_path)
    (tmp_path / "notes.txt").write_text("", encoding="utf-8")
    (tmp_path / "bare").mkdir()
    (tmp_path / "bad-name").mkdir()
    (tmp_path / "bad-name" / "__init__.py").write_text("", encoding="utf-8")
    (tmp_path / "link.py").symlink_to(tmp_path / "mod.py")
    path.write_text(path.read_text() + f'[templates.x]\ndna = "{dna}"\n', encoding="utf-8")
    m = load_manifest(path)
    with pytest.raises(ManifestError) as info:
        m.check_paths()
    assert (info.value.file, info.value.key) == (str(path), "templates.x.dna")
    assert fragment in info.value.problem


def test_manifest_module_is_pure() -> None:
    """House rule 1: the manifest core imports no trio, sockets, processes or clocks."""
    import cellmesh.actors.manifest as mod

    source = Path(mod.__file__).read_text(encoding="utf-8")
    banned = {"trio", "socket", "os", "subprocess", "time", "random", "threading"}
    found = [(line, name) for line, name in module_imports(source, "cellmesh.actors.manifest")
             if name.split(".")[0] in banned]  # fmt: skip
    assert found == []


def test_manifest_standby_defaults_on_and_can_be_turned_off() -> None:
    on = parse_manifest('[cells.a]\ndna = "a.py"\n', path=Path("/m/cellmesh.toml"))
    assert on.cells["a"].standby is True
    text = '[cells.a]\ndna = "a.py"\nstandby = false\n'
    off = parse_manifest(text, path=Path("/m/cellmesh.toml"))
    assert off.cells["a"].standby is False
    e = error('[cells.a]\ndna = "a.py"\nstandby = "yes"\n')
    assert e.key == "cells.a.standby"


@pytest.mark.parametrize(
    ("entry", "ok"),
    [("cells.db:Db", True), ("cells.db", True), ("db:Outer.Inner", True), ("db:", False),
     ("db:Db:X", False), ("class:Db", False), ("cells..db", False), (":Db", False)],
)
def test_manifest_entry_takes_the_runtime_forms(entry: str, ok: bool) -> None:
    text = CELL + f"entry = '{entry}'\n"
    path = Path("/m/cellmesh.toml")
    if ok:
        assert parse_manifest(text, path=path).cells["db"].entry == entry
    else:
        with pytest.raises(ManifestError, match="expected 'module:Class' or 'module'"):
            parse_manifest(text, path=path)


@pytest.mark.parametrize(
    ("text", "size"),
    [("4096", 4096), ("4096B", 4096), ("256M", 256 << 20), ("256 MB", 256 << 20),
     ("256Mi", 256 << 20), ("256mib", 256 << 20), ("1.5GiB", 3 << 29), ("64k", 64 << 10)],
)
def test_manifest_sizes_are_binary_whatever_the_spelling(text: str, size: int) -> None:
    limits = parse_manifest(CELL + f"limits = {{ memory = '{text}' }}\n" if size >= 32 << 20
                            else CELL + f"[root]\nlog_max_bytes = '{text}'\n",
                            path=Path("/m/cellmesh.toml"))
    got = limits.cells["db"].limits.memory if size >= 32 << 20 else limits.root.log_max_bytes
    assert got == size


@pytest.mark.parametrize("text", ["256i", "256 iB", "12 parsecs", "1.5.2M", "M", "-1M"])
def test_manifest_sizes_refuse_other_spellings(text: str) -> None:
    with pytest.raises(ManifestError, match="is not a size"):
        parse_manifest(CELL + f"limits = {{ memory = '{text}' }}\n", path=Path("/m/x.toml"))


def test_manifest_a_cell_whose_entry_ships_with_cellmesh_needs_no_dna(tmp_path: Path) -> None:
    text = "[cells.ledger]\nentry = 'cellmesh.ledger:Ledger'\nreplicas = 3\n"
    manifest = parse_manifest(text, path=tmp_path / "cellmesh.toml")
    decl = manifest.cells["ledger"]
    assert decl.dna == Path(stockdna.__file__) and decl.entry == "cellmesh.ledger:Ledger"
    manifest.check_paths()  # a real module file, as any DNA must be
    for text in ("[cells.db]\n", "[cells.db]\nentry = 'cellmeshx.a:B'\n"):
        with pytest.raises(ManifestError) as info:
            parse_manifest(text, path=tmp_path / "cellmesh.toml")
        assert info.value.key == "cells.db.dna"
        assert "only an entry in cellmesh itself" in info.value.problem


def test_with_cell_replaces_or_drops_a_cell_and_its_place_among_children() -> None:
    m = parse('''
        [supervisors.backend]
        children = ["db", "cache"]

        [cells.db]
        dna = "db.py"

        [cells.cache]
        dna = "cache.py"

        [cells.web]
        dna = "web.py"
        ''')
    without = m.with_cell("cache", None)
    assert list(without.cells) == ["db", "web"]
    assert without.supervisors["backend"].children == ("db",)
    assert "web" not in m.with_cell("web", None).top.children
    assert m.with_cell("web", None).top.children == tuple(
        c for c in m.top.children if c != "web")
    changed = m.with_cell("db", attrs.evolve(m.cells["db"], entry="db:Other"))
    assert changed.cells["db"].entry == "db:Other" and changed.supervisors == m.supervisors
    assert m.cells["db"].entry != "db:Other"  # the original is untouched
