"""The ``cellmesh`` command line: parse arguments, call the library, map errors to exit codes.

The top layer (docs/architecture.md): it may import everything; nothing
in the package imports it but ``__main__``.

Each command group lives in its own module with a ``register(app)`` function;
:func:`build_app` assembles them. Exit codes: 0 success, 1 a runtime failure
(:class:`~cellmesh.errors.CellmeshError`), 2 bad usage or configuration.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import cyclopts

from .. import __version__
from .._about import ABOUT
from ..errors import CellmeshError, ConfigError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def build_app() -> cyclopts.App:
    """Build the ``cellmesh`` application with every command group registered."""
    app = cyclopts.App(
        name="cellmesh",
        help="cellmesh: a Trio actor runtime of sandboxed cells.",
        version=__version__,
    )

    @app.default
    def _root(*, about: bool = False) -> int:
        """Print the attribution notice with --about; otherwise show help.

        Parameters
        ----------
        about
            Print the attribution notice of the design cellmesh grew from.
        """
        if about:
            sys.stdout.write(ABOUT)
            return EXIT_OK
        app.help_print([])
        return EXIT_OK

    from . import _bench, _ops, _swap
    from . import _root as _daemon

    _bench.register(app)
    _daemon.register(app)
    _ops.register(app)
    _swap.register(app)
    try:
        from . import _sandbox  # registered once the sandbox layer exists
    except ImportError:
        pass
    else:
        _sandbox.register(app)
    return app


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cellmesh`` console script; returns the exit code."""
    app = build_app()
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = app(args, exit_on_error=False, print_error=True)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else EXIT_USAGE
    except cyclopts.CycloptsError:
        return EXIT_USAGE
    except ConfigError as exc:
        print(f"cellmesh: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CellmeshError as exc:
        print(f"cellmesh: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    return result if isinstance(result, int) else EXIT_OK
