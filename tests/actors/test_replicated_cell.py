"""The user's side of a replicated cell: what a class may declare (checked when it is
created), and the replica's env contract (CELL_REPLICA_*, exit code 2 when wrong)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cellmesh
from cellmesh import CommandMeta, ReplicatedCell, query
from cellmesh.actors._replica_machine import ReplicaMachine
from cellmesh.actors._replica_runtime import _read_identity
from cellmesh.actors._replica_sessions import SessionLimits
from cellmesh.actors._replica_spec import ReplicaSpec
from cellmesh.errors import ConfigError
from cellmesh.testing.bank import Bank, Deposit, GetBalances
from cellmesh.testing.kvcell import KVCell
from cellmesh.wire.proteins import PROTEINS


@cellmesh.protein("t.repl.Cmd")
class Cmd:
    n: int


@cellmesh.protein("t.repl.Ask")
class Ask:
    pass


def test_replicated_cell_collects_commands_and_queries() -> None:
    assert Bank.commands == (Bank.commands[0], Bank.commands[1])
    assert {cls.__name__: spec.method for cls, spec in Bank._query_table.items()} == {
        "GetBalances": "get_balances", "GetApplied": "get_applied",
    }
    assert {spec.stale for spec in KVCell._query_table.values()} == {False, True}
    assert GetBalances in Bank._query_table and Deposit in Bank.commands


def test_replicated_cell_refuses_receptors() -> None:
    with pytest.raises(TypeError, match="no @receptor"):

        class Bad(ReplicatedCell):
            @cellmesh.receptor
            async def handle(self, msg: Cmd) -> None: ...


def test_replicated_cell_refuses_async_queries_and_non_proteins() -> None:
    with pytest.raises(TypeError, match="synchronous"):

        class Bad(ReplicatedCell):
            @query
            async def ask(self, q: Ask) -> None: ...

    with pytest.raises(TypeError, match="not a protein"):

        class Bad2(ReplicatedCell):
            commands = (int,)


def test_replicated_cell_refuses_async_generator_queries_and_async_hooks() -> None:
    """An async generator query was accepted (every call then failed with "not a
    protein"); an `async def apply` too (every command committed, none ever ran)."""
    with pytest.raises(TypeError, match="synchronous"):

        class BadQuery(ReplicatedCell):
            @query
            async def ask(self, q: Ask) -> Any:
                yield q

    for hook in ("apply", "snapshot", "restore", "snapshot_job"):
        with pytest.raises(TypeError, match=rf"AsyncHook\.{hook} must be a plain \(synchronous\)"):
            async def body(self: Any, *args: Any) -> Any: ...

            type("AsyncHook", (ReplicatedCell,), {hook: body})


def test_replicated_cell_an_unannotated_query_is_named_a_query() -> None:
    """The message said `receptor` and pointed to @receptor(Protein), which this
    class refuses."""
    with pytest.raises(TypeError, match=r"query .*NoAnnot\.ask: parameter 'q' has no "
                       r"annotation; annotate it with the protein or use "
                       r"@cellmesh\.query\(Protein\)"):

        class NoAnnot(ReplicatedCell):
            @query
            def ask(self, q):  # type: ignore[no-untyped-def]
                return None


def test_replicated_cell_refuses_a_protein_both_command_and_query() -> None:
    with pytest.raises(TypeError, match="both a command and a query"):

        class Bad(ReplicatedCell):
            commands = (Cmd,)

            def apply(self, command: Any, meta: CommandMeta) -> None: ...
            def snapshot(self) -> bytes: return b""
            def restore(self, data: bytes) -> None: ...

            @query
            def ask(self, q: Cmd) -> None: ...


def test_replicated_cell_with_commands_must_define_the_state_machine() -> None:
    with pytest.raises(TypeError, match="does not define snapshot, restore"):

        class Bad(ReplicatedCell):
            commands = (Cmd,)

            def apply(self, command: Any, meta: CommandMeta) -> None: ...


ENV = {
    "CELL_REPLICA_ID": "1",
    "CELL_REPLICA_PEERS": "0=/p/0.sock,1=/p/1.sock,2=/p/2.sock",
    "CELL_REPLICA_BOOTSTRAP": "0,1,2",
    "CELL_LISTEN_FDS": "2",
}


def test_replica_spec_parses_the_contract() -> None:
    spec = ReplicaSpec.from_env(ENV, Path("/data"))
    assert (spec.replica, spec.bootstrap, spec.join, spec.peer_fd) == (1, (0, 1, 2), False, 4)
    assert spec.own_path == "/p/1.sock"
    joining = ReplicaSpec.from_env(
        {**ENV, "CELL_REPLICA_JOIN": "1", "CELL_REPLICA_BOOTSTRAP": "", "CELL_LISTEN_FDS": ""},
        Path("/data"),
    )
    assert joining.join and joining.peer_fd is None


@pytest.mark.parametrize(("change", "variable"), [
    ({"CELL_REPLICA_ID": ""}, "CELL_REPLICA_ID"),
    ({"CELL_REPLICA_ID": "-1"}, "CELL_REPLICA_ID"),
    ({"CELL_REPLICA_ID": "7"}, "CELL_REPLICA_PEERS"),
    ({"CELL_REPLICA_PEERS": "0=/a,0=/b,1=/c"}, "CELL_REPLICA_PEERS"),
    ({"CELL_REPLICA_PEERS": "1"}, "CELL_REPLICA_PEERS"),
    # (a first voter without a peer path is refused where the bootstrap is used, on an
    # empty data dir only: test_replica_regrow.py)
    ({"CELL_REPLICA_BOOTSTRAP": "1,1"}, "CELL_REPLICA_BOOTSTRAP"),
    ({"CELL_REPLICA_JOIN": "yes"}, "CELL_REPLICA_JOIN"),
    ({"CELL_LISTEN_FDS": "two"}, "CELL_LISTEN_FDS"),
    ({"CELL_REPLICA_CHECK": "on"}, "CELL_REPLICA_CHECK"),
])
def test_replica_spec_names_the_bad_variable(change: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        ReplicaSpec.from_env({**ENV, **change}, Path("/data"))
    assert info.value.source == variable


def test_replica_spec_needs_a_data_dir() -> None:
    with pytest.raises(ConfigError) as info:
        ReplicaSpec.from_env(ENV, None)
    assert info.value.source == "CELL_DATA_DIR"


def run_runtime(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    full = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
        "CELL_NAME": "bank",
        "CELL_SOCKET_DIR": str(tmp_path),
        "CELL_DATA_DIR": str(tmp_path / "data"),
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "cellmesh.actors.runtime"], env=full,
        capture_output=True, text=True, timeout=60, check=False,
    )


def test_replicated_runtime_refuses_mismatched_entries_with_exit_2(tmp_path: Path) -> None:
    plain = run_runtime(
        {**ENV, "CELL_LISTEN_FDS": "", "CELL_ENTRY": "cellmesh.testing.bank:Deposit"}, tmp_path
    )
    assert plain.returncode == 2
    assert "CELL_ENTRY" in plain.stderr
    not_replicated = run_runtime({**ENV, "CELL_LISTEN_FDS": "", "CELL_ENTRY":
                                  "rootcells:Echoer"}, tmp_path)
    assert not_replicated.returncode == 2
    no_replica = run_runtime({"CELL_ENTRY": "cellmesh.testing.bank:Bank"}, tmp_path)
    assert no_replica.returncode == 2
    assert "CELL_REPLICA_ID" in no_replica.stderr and "replicas = N" in no_replica.stderr
    bad_env = run_runtime(
        {**ENV, "CELL_LISTEN_FDS": "", "CELL_REPLICA_JOIN": "maybe",
         "CELL_ENTRY": "cellmesh.testing.bank:Bank"}, tmp_path,
    )
    assert bad_env.returncode == 2
    assert "CELL_REPLICA_JOIN" in bad_env.stderr


env_values = st.text(alphabet=st.sampled_from("0123456789,=/-.a 1"), max_size=20)


@settings(max_examples=300, deadline=None)
@given(values=st.fixed_dictionaries({
    "CELL_REPLICA_ID": env_values, "CELL_REPLICA_PEERS": env_values,
    "CELL_REPLICA_BOOTSTRAP": env_values, "CELL_REPLICA_JOIN": env_values,
    "CELL_LISTEN_FDS": env_values, "CELL_LISTEN_FDS_START": env_values,
    "CELL_REPLICA_CHECK": env_values,
}))
def test_replica_spec_garbage_env_raises_only_config_error(values: dict[str, str]) -> None:
    """Garbage in, only ConfigError out (naming a CELL_* variable)."""
    try:
        ReplicaSpec.from_env(values, Path("/data"))
    except ConfigError as exc:
        assert exc.source.startswith("CELL_")


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=60) | st.builds(
    cbor2.dumps, st.dictionaries(st.sampled_from(["replica", "bootstrap", "claimed", "x"]),
                                 st.none() | st.booleans() | st.integers(-2, 3)
                                 | st.lists(st.integers(-1, 3)))))
def test_replica_identity_file_garbage_raises_only_config_error(raw: bytes) -> None:
    """A damaged replica.cbor is refused naming CELL_DATA_DIR, whatever its bytes."""
    try:
        owner, first, claimed = _read_identity(Path("/data/replica.cbor"), raw)
    except ConfigError as exc:
        assert exc.source == "CELL_DATA_DIR"
    else:
        assert isinstance(owner, int) and all(isinstance(v, int) for v in first)
        assert isinstance(claimed, bool)


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=80) | st.builds(
    cbor2.dumps,
    st.lists(st.none() | st.integers(-2, 3) | st.binary(max_size=4) | st.lists(st.integers()),
             max_size=6)))
def test_replica_snapshot_garbage_raises_only_value_error(raw: bytes) -> None:
    """Garbage in, only ValueError out (a snapshot from a peer is read through this)."""
    machine = ReplicaMachine(Bank(), registry=PROTEINS, limits=SessionLimits())
    with contextlib.suppress(ValueError):
        machine.restore(raw)


@pytest.mark.parametrize(("joining", "voters", "role"), [
    (True, {1, 2}, "learner"),  # joined empty, its configuration does not name it yet
    (True, {1, 2, 3}, "follower"),  # promoted (the join record lags a moment)
    (False, {1, 2, 3}, "follower"),
])
def test_a_joining_replica_reports_itself_a_learner(
    joining: bool, voters: set[int], role: str
) -> None:
    """`cellmesh status` shows a replica that does not vote yet as a learner, not
    as a follower that makes the group look whole."""
    from types import SimpleNamespace

    from cellmesh.actors._replica_runtime import ReplicaRuntime
    from cellmesh.consensus import Role

    status = SimpleNamespace(id=3, role=Role.FOLLOWER, term=2, leader=1, commit=5, applied=5,
                             last_index=5, voters=frozenset(voters), learners=frozenset(),
                             joining=joining)
    fake: Any = SimpleNamespace(node=SimpleNamespace(status=lambda: status),
                                spec=SimpleNamespace(replica=2))
    fake.membership = lambda: ReplicaRuntime.membership(fake)
    assert ReplicaRuntime.stats(fake).role == role
