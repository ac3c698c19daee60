"""Test support shipped with cellmesh (like ``trio.testing``).

Above the facade (docs/architecture.md): it may import every layer below
it, and nothing but tests, benchmarks and the CLI import it.

* :class:`Simulation` / :func:`run_seed` -- the deterministic Raft fault
  simulator (``scripts/simulate.py --seed N`` replays a seed).
* :func:`check_operations` with :class:`KVModel` / :class:`RegisterModel` --
  the linearizability checker.
* :class:`RaftNet` -- a hand-driven, lossless network of Raft cores for
  step-by-step unit tests.
* :class:`SafetyChecker` / :class:`SimDisk` -- the simulator's building blocks.
* :func:`open_root` / :func:`open_mesh` -- a root daemon served inside the
  test's Trio run (a manifest text in a home, or a manifest file where it is).
* :func:`open_replica_group` / :func:`process_replica_group` -- a replicated
  cell's replicas without a root, in the test's Trio run or as processes;
  :class:`Bank` / :class:`BankModel` -- a replicated bank and its model.
* :class:`RootGroup` / :func:`nemesis` / :func:`under_faults` / :class:`Clients` /
  :class:`KillBudget` -- faults (kill -9, SIGSTOP) and checks (convergence,
  byte-identical replicas) against a replicated cell run by a root, and the
  concurrent clients of a workload: the Jepsen-style tests' machinery.
"""

from cellmesh.testing.bank import Bank, BankModel
from cellmesh.testing.cluster import (
    GroupAdmin,
    ProcessGroup,
    ReplicaGroup,
    open_replica_group,
    process_replica_group,
)
from cellmesh.testing.kvsm import Command, KeyValueMachine, KVStateMachine
from cellmesh.testing.lincheck import (
    CheckResult,
    KVModel,
    Model,
    Operation,
    RegisterModel,
    SearchBudgetExceeded,
    check_operations,
    history_from_events,
)
from cellmesh.testing.mesh import MeshStopped, mesh_env, open_mesh, open_root
from cellmesh.testing.raftcheck import InvariantViolation, SafetyChecker
from cellmesh.testing.raftnet import PerfectStorage, RaftNet
from cellmesh.testing.raftsim import SimParams, SimResult, Simulation, SimulationFailure, run_seed
from cellmesh.testing.rootfaults import Clients, KillBudget, RootGroup, nemesis, under_faults
from cellmesh.testing.simdisk import DiskState, SimDisk

__all__ = [
    "Bank",
    "BankModel",
    "CheckResult",
    "Clients",
    "Command",
    "DiskState",
    "GroupAdmin",
    "InvariantViolation",
    "KVModel",
    "KVStateMachine",
    "KeyValueMachine",
    "KillBudget",
    "MeshStopped",
    "Model",
    "Operation",
    "PerfectStorage",
    "ProcessGroup",
    "RaftNet",
    "RegisterModel",
    "ReplicaGroup",
    "RootGroup",
    "SafetyChecker",
    "SearchBudgetExceeded",
    "SimDisk",
    "SimParams",
    "SimResult",
    "Simulation",
    "SimulationFailure",
    "check_operations",
    "history_from_events",
    "mesh_env",
    "nemesis",
    "open_mesh",
    "open_replica_group",
    "open_root",
    "process_replica_group",
    "run_seed",
    "under_faults",
]
