"""cellmesh: a Trio structured-concurrency actor runtime.

The public API is exactly what this module re-exports.
"""

from __future__ import annotations

__version__ = "0.1.0"
