"""The ``cellmesh`` command line: parse arguments, call the library, map errors to exit codes.

The top layer (docs/architecture.md): it may import everything; nothing
in the package imports it but ``__main__``.

Each command group lives in its own module with a ``register(app)`` function;
:func:`build_app` assembles them. Exit codes: 0 success, 1 a runtime failure
(:class:`~cellmesh.errors.CellmeshError`), 2 bad usage or configuration, 141
when the reader of our output closed it (`cellmesh logs X | head -1`).

Every failure prints one line on stderr, ``cellmesh: error: <what and why>``,
never a traceback of ours. A remote traceback (a cell's, or the root's when
it fails a request with a bug) is shown only with ``--debug`` as the first
argument or ``CELLMESH_DEBUG=1`` in the environment. An unknown command says
so and suggests the nearest one (``cellmesh stauts`` -> ``status``), also
with ``--help`` after it: the app has no default command, so cyclopts
reports every unmatched first word as an unknown command.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence
from typing import Final, TextIO

import cyclopts

from .. import __version__
from .._about import ABOUT
from ..errors import CellmeshError, ConfigError, RemoteCellError

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
#: Our output's reader closed it (128 + SIGPIPE, as a shell reports a filter killed by it).
EXIT_BROKEN_PIPE: Final = 141
#: Environment variable that turns on ``--debug``.
DEBUG_ENV: Final = "CELLMESH_DEBUG"


def build_app() -> cyclopts.App:
    """Build the ``cellmesh`` application with every command group registered."""
    app = cyclopts.App(
        name="cellmesh",
        help=(
            "cellmesh: a Trio actor runtime of sandboxed cells.\n\n"
            "Put --debug first (or set CELLMESH_DEBUG=1) to see remote tracebacks."
        ),
        version=__version__,
        # Ctrl-C reaches main (which says what carries on in the root), not sys.exit(130).
        suppress_keyboard_interrupt=False,
    )

    @app.command(name="--about")
    def _about() -> int:
        """Print the attribution notice of the design cellmesh grew from."""
        sys.stdout.write(ABOUT)
        return EXIT_OK

    from . import _bench, _ledger, _ops, _replicas, _scaffold, _swap
    from . import _root as _daemon

    _bench.register(app)
    _daemon.register(app)
    _ledger.register(app)
    _ops.register(app)
    _replicas.register(app)
    _scaffold.register(app)
    _swap.register(app)
    from . import _sandbox

    _sandbox.register(app)
    return app


def _debug_requested(args: list[str]) -> bool:
    """Strip leading ``--debug`` flags from ``args``; True if any (or the env var) asks."""
    asked = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    while args and args[0] == "--debug":
        del args[0]
        asked = True
    return asked


def report(exc: BaseException, *, debug: bool, err: TextIO) -> int:
    """Print ``exc`` as one ``cellmesh: error:`` line (plus the remote traceback with
    ``debug``) and return its exit code."""
    if isinstance(exc, cyclopts.CycloptsError):
        text = " ".join(str(exc).split())  # cyclopts wraps long messages
        print(f"cellmesh: error: {text}", file=err)
        return EXIT_USAGE
    if isinstance(exc, RemoteCellError):
        print(
            f"cellmesh: error: cell {exc.cell!r} failed the call: "
            f"{exc.type_name}: {exc.remote_message}",
            file=err,
        )
        if exc.remote_traceback:
            if debug:
                print("remote traceback:\n" + exc.remote_traceback.rstrip(), file=err)
            else:
                print("cellmesh: (--debug shows the remote traceback)", file=err)
        return EXIT_FAILURE
    print(f"cellmesh: error: {exc}", file=err)
    trace = getattr(exc, "remote_traceback", None)
    if debug and isinstance(trace, str) and trace:
        print("remote traceback:\n" + trace.rstrip(), file=err)
    refused_config = getattr(exc, "error", None) in _CONFIG_REFUSALS  # a RootRefused
    return EXIT_USAGE if isinstance(exc, ConfigError) or refused_config else EXIT_FAILURE


#: The root's refusals that are bad configuration (``Refused.error``): exit 2, as locally.
_CONFIG_REFUSALS: Final = frozenset({"ConfigError", "ManifestError"})


#: Commands whose change runs in the root: interrupting the command does not stop it.
_CARRIED_ON: Final = {"swap": "swap", "reload": "reload", "replicas": "change",
                      "wipe": "wipe"}


def _say_what_carries_on(args: Sequence[str]) -> None:
    """After Ctrl-C of a command whose change runs in the root, say that it goes on."""
    command = next((a for a in args if not a.startswith("-")), "")
    what = _CARRIED_ON.get(command)
    if what is not None and "--dry-run" not in args:
        print(f"cellmesh: interrupted; the {what} carries on in the root (`cellmesh status` "
              "shows it; the root's log, $CELL_HOME/logs/root.log, says how it ended)",
              file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cellmesh`` console script; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_requested(args)
    app = build_app()
    try:
        result = app(args, exit_on_error=False, print_error=False)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else EXIT_USAGE
    except (cyclopts.CycloptsError, CellmeshError) as exc:
        return report(exc, debug=debug, err=sys.stderr)
    except KeyboardInterrupt:
        _say_what_carries_on(args)
        return 130
    except BaseExceptionGroup as group:
        # Ctrl-C in a Trio run (a bench, a mesh in this process) arrives wrapped in
        # the groups of the nurseries it crossed: an interrupt, not a crash.
        rest = group.split(KeyboardInterrupt)[1]
        if rest is not None or debug:
            raise
        _say_what_carries_on(args)
        return 130
    except BrokenPipeError:
        # The reader of our output went away (`cellmesh logs X | head -1`): stop
        # quietly, as a Unix filter does, and keep Python from complaining again
        # when it flushes stdout at exit.
        _drop_stdout()
        return EXIT_BROKEN_PIPE
    except OSError as exc:
        # The machine's, not ours: a full disk under our output (> /dev/full), a
        # directory we may not write. One line naming it, not a traceback.
        if debug:
            raise
        _drop_stdout()
        print(f"cellmesh: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return result if isinstance(result, int) else EXIT_OK


def _drop_stdout() -> None:
    """Point stdout at /dev/null, so Python's flush at exit does not fail again."""
    with contextlib.suppress(OSError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
