"""Fixtures shared by the test packages (actors, ledger, ...)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

from cellmesh.sandbox._bwrap import find_bwrap, probe_bwrap

# Property tests check what is generated, not how fast: on a loaded CI machine
# a slow example is not a failure (no per-example deadline, no too-slow health
# check). Tests that set their own @settings inherit this for the rest.
settings.register_profile(
    "cellmesh", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("cellmesh")


@pytest.fixture(scope="session")
def bwrap_usable() -> str | None:
    """None when bwrap cells can run here, else why not (tests skip with it)."""
    path = find_bwrap()
    if path is None:
        return "bwrap is not installed (scripts/setup.sh installs it as root)"
    problem = probe_bwrap(path)
    return None if problem is None else f"bwrap sandbox unavailable: {problem}"
