"""House rule 3: the public API is what ``__init__`` re-exports, each name once."""

from __future__ import annotations

import cellmesh.consensus
import cellmesh.testing
from cellmesh.consensus import errors, types


def test_consensus_exports_resolve_and_are_unique() -> None:
    for pkg in (cellmesh.consensus, cellmesh.testing):
        names = pkg.__all__
        assert len(names) == len(set(names))
        for name in names:
            assert getattr(pkg, name) is not None


def test_every_consensus_error_and_value_type_is_exported() -> None:
    for mod in (errors, types):
        for name, obj in vars(mod).items():
            if (
                isinstance(obj, type)
                and obj.__module__ == mod.__name__
                and not name.startswith("_")
            ):
                assert name in cellmesh.consensus.__all__, name


def test_not_leader_carries_its_hint_and_shares_the_root() -> None:
    from cellmesh.errors import CellmeshError

    exc = cellmesh.consensus.NotLeader(leader_hint=3)
    assert exc.leader_hint == 3
    assert isinstance(exc, cellmesh.consensus.ConsensusError)
    assert isinstance(exc, CellmeshError)
