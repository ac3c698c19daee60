"""``cellmesh bench ...``: benchmarks that print their own baselines and ratios."""

from __future__ import annotations

import cyclopts


def register(app: cyclopts.App) -> None:
    """Attach the ``bench`` command group to ``app``."""
    bench = cyclopts.App(name="bench", help="Benchmarks: each prints its baseline and the ratio.")
    app.command(bench)
