"""``cellmesh bench ...``: benchmarks that print their own baselines and ratios."""

from __future__ import annotations

import cyclopts


def register(app: cyclopts.App) -> None:
    """Attach the ``bench`` command group to ``app``."""
    bench = cyclopts.App(name="bench", help="Benchmarks: each prints its baseline and the ratio.")

    @bench.command(name="wire")
    def _wire(*, json: bool = False, quick: bool = False) -> int:
        """Measure the wire layer against raw socket baselines in one run; print ratios.

        Client and server of every measurement run in separate processes;
        cellmesh and baseline rounds are interleaved. The full run takes about
        one to two minutes on a 2-core machine.

        Parameters
        ----------
        json
            Print one JSON document with every raw number instead of the table.
        quick
            A shorter run (about 20 s): fewer rounds and messages.
        """
        from ..bench import wire

        return wire.main(json_output=json, quick=quick)

    app.command(bench)
