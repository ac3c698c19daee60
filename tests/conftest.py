"""Fixtures shared by the test packages (actors, ledger, ...)."""

from __future__ import annotations

import pytest

from cellmesh.sandbox._bwrap import find_bwrap, probe_bwrap


@pytest.fixture(scope="session")
def bwrap_usable() -> str | None:
    """None when bwrap cells can run here, else why not (tests skip with it)."""
    path = find_bwrap()
    if path is None:
        return "bwrap is not installed (scripts/setup.sh installs it as root)"
    problem = probe_bwrap(path)
    return None if problem is None else f"bwrap sandbox unavailable: {problem}"
