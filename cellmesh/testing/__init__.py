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
"""

from cellmesh.testing.cluster import ProcessCluster, find_leader, process_cluster
from cellmesh.testing.kvsm import Command, KVStateMachine
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
from cellmesh.testing.mesh import mesh_env, open_mesh, open_root
from cellmesh.testing.raftcheck import InvariantViolation, SafetyChecker
from cellmesh.testing.raftnet import PerfectStorage, RaftNet
from cellmesh.testing.raftsim import SimParams, SimResult, Simulation, SimulationFailure, run_seed
from cellmesh.testing.simdisk import DiskState, SimDisk

__all__ = [
    "CheckResult",
    "Command",
    "DiskState",
    "InvariantViolation",
    "KVModel",
    "KVStateMachine",
    "Model",
    "Operation",
    "PerfectStorage",
    "ProcessCluster",
    "RaftNet",
    "RegisterModel",
    "SafetyChecker",
    "SearchBudgetExceeded",
    "SimDisk",
    "SimParams",
    "SimResult",
    "Simulation",
    "SimulationFailure",
    "check_operations",
    "find_leader",
    "history_from_events",
    "mesh_env",
    "open_mesh",
    "open_root",
    "process_cluster",
    "run_seed",
]
