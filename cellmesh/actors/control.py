"""Control proteins: what the CLI, the root and the cells say to each other.

Three conversations, all over the ordinary wire codec (membranes and
synapses), so they share its framing, limits and fuzzing:

* **operator -> root** on the control socket ``$CELL_UMBILICAL`` (default
  ``$CELL_SOCKET_DIR/mitosis.sock``). Only the uid that owns the root may
  connect (``SO_PEERCRED``); others are refused before the hello.
  Requests: :class:`StatusRequest`, :class:`KillCell`, :class:`StopMesh`,
  :class:`SpawnCell`, :class:`SwapCell` (-> :class:`SwapReport`),
  :class:`ReloadManifest` (-> :class:`ReloadReport`), :class:`ChangeReplicas`,
  :class:`WipeReplica`. Answers: :class:`StatusReply` or :class:`Ack`; a
  request the root refuses (an operator error: no such cell, spawning is
  off, a swap already in progress, a membership change the group cannot
  make, ...) is answered with :class:`Refused`, which says why in one line;
  only a bug in the root arrives as a remote error (``RemoteCellError``)
  with its traceback.

* **cell -> root** on the cell's own umbilical: a socket the root binds for
  that cell alone and binds into its sandbox (``CELL_UMBILICAL`` inside the
  cell). Which cell is speaking is known from the socket, never from the
  message. Requests: :class:`CellReady` (the cell's ``on_start`` finished:
  OTP's ``init`` returned), :class:`Monitor` / :class:`Demonitor`,
  :class:`Link` / :class:`Unlink`, :class:`StartChild` / :class:`StopChild`;
  signals :class:`CellStats` (about once a second) and, from a replica of a
  replicated cell, :class:`ReplicaStats` (every stats tick and at once on a
  role, term or configuration change). Hot swap (docs/swap.md):
  :class:`NextOrder` (a long poll; the root answers :class:`Suspend` when
  the process must hand over), :class:`SwapOut` (the old process's state,
  answered by a :class:`SwapVerdict`), :class:`SwapIn` (the new process asks
  for the state: :class:`Handover`) and :class:`SwapInFailed`. The token
  in these (and in :class:`CellReady`, :class:`CellStats`) is the one the
  root wrote on the process's go pipe: it tells the two processes of a cell
  apart during a swap.

* **root -> cell** on the cell's membrane: the signal :class:`CellDown` for
  every monitor (and trapped link) when the watched cell stops.

Cell runtime contract (what the root sets for ``python -m cellmesh.actors.runtime``):

``CELL_NAME``        the cell's name
``CELL_ENTRY``       ``module:Class`` of the :class:`~cellmesh.Cell` subclass
``CELL_DNA_DIR``     the DNA entry (put first on ``sys.path``)
``CELL_LISTEN_FDS``  ``1``: the membrane's listening socket is fd 3
``CELL_UMBILICAL``   the cell's umbilical socket path
``CELL_SOCKET_DIR``  where the sockets of the cells it may call are

A replica of a replicated cell (``replicas = N``; /work/briefs/REPLICA-CONTRACT.md,
docs/root.md "Replicated cells") also gets ``CELL_REPLICA_ID``,
``CELL_REPLICA_PEERS``, ``CELL_REPLICA_BOOTSTRAP`` or ``CELL_REPLICA_JOIN``,
the group's client listener as fd 3 and its own peer listener as fd 4.
"""

from __future__ import annotations

from typing import Any, Final

import attrs

from ..wire.proteins import protein

#: Membrane options of the root's sockets (docs/security.md, "Denial of
#: service"). They carry small control proteins, so what a peer may make the
#: root hold is small; the root's replies are bounded by the peer's own limit.
#: The largest legitimate request is a cell's ``SwapOut``: its state travels
#: inline below 64 KiB (the vesicle threshold), its large fields as vesicles.
#: Received vesicles stay mapped only while their message waits: two ``SwapOut``
#: frames' worth (64 each) per umbilical; their bytes are bounded by the root with
#: ``[root] swap_max_state`` (``umbilical_limits``).
UMBILICAL_LIMITS: Final[dict[str, Any]] = {
    "max_frame_size": 1024 * 1024, "credit_calls": 256, "credit_bytes": 2 * 1024 * 1024,
    "max_connections": 8, "max_held_fds": 2 * 64, "max_mapped_vesicles": 2 * 64,
    "send_tracebacks": False,  # a refusal tells a cell why, never the root's code
}


def umbilical_limits(swap_max_state: int) -> dict[str, Any]:
    """The umbilical's options for a root whose swaps hand over at most ``swap_max_state``
    bytes: received vesicles mapped at once are bounded to twice that (one state in
    hand, one arriving), so a cell cannot pin the root's memory or mappings with them."""
    return {**UMBILICAL_LIMITS, "max_mapped_bytes": 2 * swap_max_state + (1 << 20)}
CONTROL_LIMITS: Final[dict[str, Any]] = {
    "max_frame_size": 64 * 1024, "credit_calls": 256, "credit_bytes": 1024 * 1024,
    "max_connections": 64, "max_held_fds": 64,
}

# ---------------------------------------------------------------- operator


@protein("cellmesh.ctl.StatusRequest")
class StatusRequest:
    """Ask the root for a :class:`StatusReply`."""


@protein("cellmesh.ctl.CellStatus")
class CellStatus:
    """One cell as the root sees it.

    ``state``: ``running`` (process up and ready), ``starting`` (spawned, not
    yet ready), ``dormant`` (declared, waiting for its first connection),
    ``stopping`` (its supervisor asked its process to stop: ``cellmesh down``,
    a restart of its siblings, a reload; it runs its ``on_stop``),
    ``restarting`` (it ended and its supervisor restarts it after a backoff
    delay: ``restart_in`` says when), ``stopped`` (not running and not
    restarted: a temporary or transient cell that ended, or one stopped by
    request). ``supervisor`` is the name of its
    supervisor (``root`` for the top one, a ``[supervisors.X]`` name,
    ``~dynamic``, or the replicated cell's name for a replica). Counters come from the cell's last
    :class:`CellStats` (zero before the first); ``rss`` bytes and
    ``cpu_percent`` from ``/proc`` (None when not running). ``rtt_p50_us`` /
    ``rtt_p99_us`` are the cell's call service times (receipt to reply) over
    its last report interval, None when it served no call in it.
    ``last_exit`` describes the cell's last abnormal exit (``exit code 1:
    ValueError: boom``; the exception as the cell reported it) and
    ``last_exit_at`` when it happened (Unix time); None when it never crashed.
    """

    name: str
    supervisor: str
    state: str
    pid: int | None
    restarts: int
    uptime: float | None
    msgs_in: int
    msgs_out: int
    rss: int | None
    cpu_percent: float | None
    rtt_p50_us: float | None
    rtt_p99_us: float | None
    backend: str
    dna: str
    #: The running code's ``Cell.version`` (from its CellReady; "" if none).
    version: str = ""
    #: The phase of a swap in progress ("" when none): see docs/swap.md.
    swap: str = ""
    last_exit: str | None = None
    last_exit_at: float | None = None
    #: Set on the rows of a replicated cell's replicas (``name`` is ``X/<id>``).
    replica: ReplicaInfo | None = None
    #: When the root received the counters and percentiles above (Unix time, on the
    #: root's clock; None before the process's first report). Rates divide by the
    #: difference of two of these, not by the time between two StatusRequests.
    stats_at: float | None = None
    #: Seconds until the supervisor restarts the cell (state ``restarting``), else None.
    restart_in: float | None = None
    #: Seconds since the root last heard from the running process (it reports every
    #: second), once that is more than ``SILENT_AFTER`` (5 s): its event loop is
    #: blocked (a handler that sleeps or spins without awaiting) or it is stopped
    #: (SIGSTOP). None while it reports.
    silent_for: float | None = None


@protein("cellmesh.ctl.ReplicaInfo")
class ReplicaInfo:
    """What the root knows of one replica: its latest :class:`ReplicaStats`, and trouble.

    ``role`` is ``unknown`` until the replica's first stats (and after its
    process ended); ``term``, ``leader`` and the indexes are None then.
    ``lag`` is the group leader's ``last_index`` minus this replica's
    ``applied_index``, both from their latest stats (None without a known
    leader). ``error`` is the reason of the replica's last failure (its last
    line of output when it exited abnormally: for a damaged log, the file and
    byte offset), ``""`` when none; ``given_up`` is true when its supervisor
    stopped restarting it (``cellmesh wipe`` or the next ``up`` starts it again).
    """

    group: str
    replica: int
    role: str
    term: int | None
    leader: int | None
    commit_index: int | None
    applied_index: int | None
    last_index: int | None
    lag: int | None
    voters: list[int]
    learners: list[int]
    error: str
    given_up: bool


@protein("cellmesh.ctl.GroupStatus")
class GroupStatus:
    """A replicated cell as a whole: members, the leader, any membership change.

    ``members`` are the replica ids the root runs (the configuration it
    drives the group to); ``target`` is the count asked for (the manifest's
    ``replicas``, or the last ``ChangeReplicas``); ``change`` describes the
    membership change in progress (``""`` when none); ``error`` the last
    failed change (``""`` when none).
    """

    name: str
    supervisor: str
    members: list[int]
    target: int
    leader: int | None
    term: int | None
    change: str
    error: str


@protein("cellmesh.ctl.RestartRecord")
class RestartRecord:
    """One entry of the root's restart log: when (Unix time), which cell, why."""

    at: float
    cell: str
    reason: str


@protein("cellmesh.ctl.StatusReply")
class StatusReply:
    """The mesh: root pid and uptime, every cell, the newest restart records.

    ``stopping`` is true once the root was asked to stop (``cellmesh down``,
    SIGTERM) or is stopping on its own (its top supervisor gave up): its
    cells are being stopped in reverse start order.
    """

    root_pid: int
    uptime: float
    manifest: str
    cells: list[CellStatus]
    restart_log: list[RestartRecord]
    groups: list[GroupStatus] = attrs.Factory(list)
    stopping: bool = False


@protein("cellmesh.ctl.KillCell")
class KillCell:
    """SIGKILL the cell's process (to exercise restarts); its supervisor reacts."""

    name: str


@protein("cellmesh.ctl.StopMesh")
class StopMesh:
    """Stop every cell in reverse start order, then the root; once no cell has stopped
    for ``timeout`` seconds, those left are killed."""

    timeout: float


@protein("cellmesh.ctl.SpawnCell")
class SpawnCell:
    """Start an undeclared cell from ``dna`` (a path on the root's host).

    Allowed only when the manifest sets ``[root] allow_spawn = true``. The
    cell runs under the root supervisor as a ``temporary`` child.
    """

    name: str
    dna: str
    entry: str


@protein("cellmesh.ctl.ChangeReplicas")
class ChangeReplicas:
    """Grow or shrink replicated cell ``name`` to ``count`` replicas, one server at a time.

    ``count`` is odd, 1 to 7. Added replicas get new ids (never reused) and
    join as learners, promoted once caught up; shrinking removes the highest
    ids first, the leader last (after a leadership transfer). The reply
    (:class:`Ack`) comes when the group has reached ``count``; one change at a
    time per group (a second is refused).
    """

    name: str
    count: int


@protein("cellmesh.ctl.WipeReplica")
class WipeReplica:
    """Rebuild replica ``name`` (``X/<id>``) from its peers.

    The root stops it, removes it from the group's configuration, wipes its
    data directory, starts it empty as a joining member and has the leader
    add it back; the reply comes once it is a voter again.
    """

    name: str


@protein("cellmesh.ctl.Ack")
class Ack:
    """A request was carried out; ``text`` says what happened."""

    text: str


#: The longest ``timeout`` or ``grace`` a swap or reload accepts (an hour): every
#: wait of a swap has a bound (docs/swap.md).
MAX_SWAP_SECONDS: Final = 3600.0


def swap_times_problem(timeout: float, grace: float) -> tuple[str, str] | None:
    """Which of ``timeout`` and ``grace`` cannot bound a swap, and why; None when both can.

    ``timeout`` must be more than 0 and ``grace`` at least 0, both at most
    :data:`MAX_SWAP_SECONDS` (so NaN and infinity are refused). A local client
    may send any float: the root checks before it starts anything, and the
    CLI checks the same before it asks.
    """
    if not 0 < timeout <= MAX_SWAP_SECONDS:
        return "timeout", (f"must be more than 0 and at most {MAX_SWAP_SECONDS:g} seconds, "
                           f"got {timeout!r}")
    if not 0 <= grace <= MAX_SWAP_SECONDS:
        return "grace", f"must be from 0 to {MAX_SWAP_SECONDS:g} seconds, got {grace!r}"
    return None


@protein("cellmesh.ctl.SwapCell")
class SwapCell:
    """Swap cell ``name`` to the current content of its DNA (docs/swap.md).

    ``timeout``: seconds until the new version must serve (else roll back);
    ``grace``: seconds it serves on probation, a crash then rolls back;
    ``rollback``: swap back to the DNA that ran before the last swap.
    Reply: :class:`SwapReport` (also when the swap rolled back).
    """

    name: str
    timeout: float
    grace: float
    rollback: bool = False


@protein("cellmesh.ctl.SwapReport")
class SwapReport:
    """How a swap ended.

    ``outcome``: ``swapped``, ``unchanged`` (identical DNA), ``retargeted``
    (no process: the next start runs the new DNA), ``rolled_back`` (the old
    version serves again, with its state) or ``failed``. ``cause`` says why
    for the last two; ``log_tail`` holds the new process's last output lines
    then. DNA digests are full hex; versions are ``Cell.version``.
    ``serving_ms``: request to new version serving (None when it never
    did); ``total_ms``: request to the end of the swap (after the grace
    period); ``state_bytes``: size of the handed-over state (None: none);
    ``timeline``: milliseconds from the request to the start of each phase
    the swap went through (``starting``, ``suspending``, ``probation``, ...).
    """

    name: str
    outcome: str
    cause: str
    from_dna: str
    to_dna: str
    from_version: str
    to_version: str
    serving_ms: float | None
    total_ms: float
    state_bytes: int | None
    log_tail: list[str]
    timeline: dict[str, float]


@protein("cellmesh.ctl.ReloadManifest")
class ReloadManifest:
    """Re-read the root's manifest and apply the difference (docs/swap.md).

    ``timeout`` and ``grace`` apply to each swap; ``dry_run`` only reports.
    Reply: :class:`ReloadReport`.
    """

    timeout: float
    grace: float
    dry_run: bool = False


@protein("cellmesh.ctl.ReloadReport")
class ReloadReport:
    """What a reload did, one line per step, and the reports of its swaps.

    ``ok`` is False when a step failed (the lines say which); a manifest the
    root cannot apply is refused as a whole before anything changes.
    """

    ok: bool
    lines: list[str]
    swaps: list[SwapReport]


@protein("cellmesh.ctl.Refused")
class Refused:
    """The root refused an operator request (operator error, not a root bug).

    ``error`` is the refusing exception's class name (``RootRequestError``,
    ``UnknownCell``, ``ChildStartFailed``, ...), for programs; ``message`` is
    the one line an operator reads (``no cell named 'x' (cells: a, b)``).
    """

    error: str
    message: str


# ---------------------------------------------------------------- cell -> root


@protein("cellmesh.ctl.CellReady")
class CellReady:
    """The cell finished ``on_start`` and serves its membrane.

    ``token``: the process's go token ("" when it has none); ``version``:
    its class's ``Cell.version``; ``trap_exits``: its class's
    ``Cell.trap_exits`` (what a failing linked cell does to it, whichever side
    asked for the link).
    """

    pid: int
    token: str = ""
    version: str = ""
    trap_exits: bool = False


@protein("cellmesh.ctl.Monitor")
class Monitor:
    """Watch ``target``: one :class:`CellDown` when it stops. Reply: :class:`MonitorRef`."""

    target: str


@protein("cellmesh.ctl.MonitorRef")
class MonitorRef:
    """The reference of a monitor (or link), echoed in its :class:`CellDown`."""

    ref: int


@protein("cellmesh.ctl.Demonitor")
class Demonitor:
    """Cancel a monitor; no :class:`CellDown` arrives for it afterwards."""

    ref: int


@protein("cellmesh.ctl.Link")
class Link:
    """Link with ``target``: when either stops abnormally the other is killed.

    With ``trap_exits`` the asking cell is not killed when ``target`` fails;
    it receives :class:`CellDown` instead (Erlang's ``trap_exit``).
    """

    target: str
    trap_exits: bool


@protein("cellmesh.ctl.Unlink")
class Unlink:
    """Remove a link made with :class:`Link`."""

    target: str


@protein("cellmesh.ctl.StartChild")
class StartChild:
    """Start a dynamic child of the asking cell from manifest template ``template``.

    The child is named ``<parent>.<suffix>``; the parent's manifest entry
    bounds how many may run (``max_children``) and which templates it may
    use. Reply: :class:`Ack` whose text is the child's name.
    """

    template: str
    suffix: str


@protein("cellmesh.ctl.StopChild")
class StopChild:
    """Stop (and forget) a dynamic child the asking cell started."""

    name: str


@protein("cellmesh.ctl.CellStats")
class CellStats:
    """The cell's membrane counters (cumulative) and service-time percentiles.

    ``rtt_buckets`` counts the interval's sampled calls per bucket of
    :data:`cellmesh.actors._stats.RTT_BUCKETS_US` (one more for above the
    last bound; not cumulative) and ``rtt_sum_us`` their total duration: the
    root adds them up into a Prometheus histogram (and ignores a report whose
    buckets are not of that shape: cells are untrusted). ``token`` is the
    sending process's go token: during a swap the root keeps only the
    serving process's reports.
    """

    msgs_in: int
    msgs_out: int
    errors: int
    rtt_p50_us: float | None
    rtt_p99_us: float | None
    rtt_buckets: tuple[int, ...] = ()
    rtt_sum_us: float = 0.0
    token: str = ""


@protein("cellmesh.ctl.NextOrder")
class NextOrder:
    """A long poll: the root answers with an order (:class:`Suspend`) or None after a while."""

    token: str


@protein("cellmesh.ctl.Suspend")
class Suspend:
    """Order to the serving process of a cell being swapped: hand over.

    Stop accepting, goaway to every connection, let the calls in flight
    finish, run ``on_swap_out`` and report with :class:`SwapOut` within
    ``seconds``; then wait for the :class:`SwapVerdict`.
    """

    seconds: float


@protein("cellmesh.ctl.SwapOut")
class SwapOut:
    """The old process drained and exported its state (or could not: ``failure``).

    ``state`` is the CBOR of the protein ``on_swap_out`` returned (None: no
    state); ``state_name`` and ``state_fingerprint`` name its protein. Its
    large ``bytes`` fields travel beside it as vesicles (``blobs``; the CBOR
    holds vesicle tags for them), so no large payload is copied into CBOR.
    Reply: :class:`SwapVerdict`.
    """

    token: str
    failure: str
    state_name: str
    state_fingerprint: str
    state: bytes | None
    blobs: list[bytes]


@protein("cellmesh.ctl.SwapVerdict")
class SwapVerdict:
    """``resume``: serve again with your state; else exit (your successor serves)."""

    resume: bool


@protein("cellmesh.ctl.SwapIn")
class SwapIn:
    """The new process of a swap imported its code and asks for the hand-over.

    Reply: :class:`Handover` once the old process has drained (or a refusal:
    then it exits quietly).
    """

    token: str
    version: str


@protein("cellmesh.ctl.Handover")
class Handover:
    """The old version's identity and state, for ``on_swap_in``.

    ``probation``: seconds after its ready during which a crash of the new
    process rolls the swap back (its runtime drains its calls first).
    """

    dna: str
    version: str
    state_name: str
    state_fingerprint: str
    state: bytes | None
    blobs: list[bytes]
    probation: float


@protein("cellmesh.ctl.SwapInFailed")
class SwapInFailed:
    """The new process fails (``stage``: import, on_start, on_swap_in, ...) and will exit."""

    token: str
    stage: str
    type_name: str
    message: str


#: The roles a :class:`ReplicaStats` may report.
REPLICA_ROLES = ("leader", "follower", "candidate", "precandidate", "learner", "removed")


@protein("cellmesh.ctl.ReplicaStats")
class ReplicaStats:
    """A replica's Raft view (signal on its umbilical; see the replica contract).

    ``role`` is one of :data:`REPLICA_ROLES`; ``leader`` the leader it knows
    in ``term`` (None: none); ``commit_index`` / ``applied_index`` /
    ``last_index`` its log positions; ``voters`` and ``learners`` the
    configuration it has. Sent on every stats tick and at once on a role,
    term or configuration change. Also the reply to the replicated
    runtime's ``ReplicaStatusRequest`` on a peer socket.
    """

    replica: int
    role: str
    term: int
    leader: int | None
    commit_index: int
    applied_index: int
    last_index: int
    voters: list[int]
    learners: list[int]


# ---------------------------------------------------------------- root -> cell


@protein("cellmesh.ctl.CellDown")
class CellDown:
    """Cell ``name`` stopped; ``reason`` is ``normal``, ``shutdown``, ``killed``,
    ``noproc`` (it was not running when monitored) or a crash description
    (``exit code 1: ValueError: boom``). ``ref`` is the monitor's (or link's)
    reference. When the crash was an exception the cell reported,
    ``error_type`` and ``error_message`` are its type (``ValueError``,
    ``pkg.mod.Error``) and message, as the crashed cell reported them (bounded,
    printable); otherwise None."""

    name: str
    reason: str
    ref: int
    error_type: str | None = None
    error_message: str | None = None


__all__ = [
    "Ack",
    "CONTROL_LIMITS",
    "CellDown",
    "CellReady",
    "CellStats",
    "CellStatus",
    "ChangeReplicas",
    "Demonitor",
    "GroupStatus",
    "Handover",
    "KillCell",
    "Link",
    "MAX_SWAP_SECONDS",
    "Monitor",
    "MonitorRef",
    "NextOrder",
    "REPLICA_ROLES",
    "Refused",
    "ReloadManifest",
    "ReloadReport",
    "ReplicaInfo",
    "ReplicaStats",
    "RestartRecord",
    "SpawnCell",
    "StartChild",
    "StatusReply",
    "StatusRequest",
    "StopChild",
    "StopMesh",
    "Suspend",
    "SwapCell",
    "SwapIn",
    "SwapInFailed",
    "SwapOut",
    "SwapReport",
    "SwapVerdict",
    "UMBILICAL_LIMITS",
    "umbilical_limits",
    "Unlink",
    "WipeReplica",
    "swap_times_problem",
]
