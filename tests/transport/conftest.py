"""Fixtures shared by the transport tests."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def sockdir() -> Iterator[Path]:
    """A fresh directory for sockets, with a short path (sun_path holds 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="cm-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
