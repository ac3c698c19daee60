"""The replicated bank the root tests run (this file is its DNA): ``cellmesh.testing.bank.Bank``."""

from __future__ import annotations

from cellmesh.testing.bank import Bank

__all__ = ["Bank"]
