"""Monitors and links (Erlang semantics), as pure bookkeeping: decisions are values."""

from __future__ import annotations

from collections.abc import Callable

from cellmesh.actors.control import CellDown
from cellmesh.actors.watches import KillLinked, Notify, Watches


def running(*names: str) -> Callable[[str], bool]:
    return lambda name: name in names


def test_watches_monitor_fires_once_with_its_ref() -> None:
    w = Watches()
    ref, now = w.monitor("a", "b", alive=True)
    assert now == []
    effects = w.exited("b", "exit code 1", abnormal=True, is_running=running())
    assert effects == [Notify(watcher="a", down=CellDown(name="b", reason="exit code 1", ref=ref))]
    assert w.exited("b", "exit code 1", abnormal=True, is_running=running()) == []


def test_watches_monitor_of_a_dead_cell_is_noproc_at_once() -> None:
    w = Watches()
    ref, now = w.monitor("a", "ghost", alive=False)
    assert now == [Notify(watcher="a", down=CellDown(name="ghost", reason="noproc", ref=ref))]
    assert w.exited("ghost", "normal", abnormal=False, is_running=running()) == []


def test_watches_refs_are_unique_and_demonitor_cancels() -> None:
    w = Watches()
    r1, _ = w.monitor("a", "b", alive=True)
    r2, _ = w.monitor("a", "b", alive=True)
    assert r1 != r2
    w.demonitor(r1)
    effects = w.exited("b", "normal", abnormal=False, is_running=running())
    assert [e.down.ref for e in effects if isinstance(e, Notify)] == [r2]


def test_watches_normal_exit_notifies_monitors_but_spares_links() -> None:
    w = Watches()
    w.link("a", "b", trap_exits=False)
    ref, _ = w.monitor("c", "b", alive=True)
    effects = w.exited("b", "normal", abnormal=False, is_running=running("a"))
    assert effects == [Notify(watcher="c", down=CellDown(name="b", reason="normal", ref=ref))]
    assert w.linked("a") == frozenset()


def test_watches_abnormal_exit_kills_linked_cells_both_ways() -> None:
    w = Watches()
    w.link("a", "b", trap_exits=False)
    assert w.exited("a", "killed", abnormal=True, is_running=running("b")) == [
        KillLinked(name="b", cause="a", reason="killed")
    ]
    w.link("a", "b", trap_exits=False)
    assert w.exited("b", "oom", abnormal=True, is_running=running("a")) == [
        KillLinked(name="a", cause="b", reason="oom")
    ]


def test_watches_a_trapping_cell_gets_cell_down_instead_of_dying() -> None:
    w = Watches()
    w.link("a", "b", trap_exits=True)
    assert w.exited("b", "crash", abnormal=True, is_running=running("a")) == [
        Notify(watcher="a", down=CellDown(name="b", reason="crash", ref=0))
    ]


def test_watches_a_linked_cell_without_a_process_is_not_killed() -> None:
    w = Watches()
    w.link("a", "b", trap_exits=False)
    assert w.exited("b", "crash", abnormal=True, is_running=running()) == []


def test_watches_unlink_and_forget() -> None:
    w = Watches()
    w.link("a", "b", trap_exits=False)
    w.unlink("b", "a")
    assert w.exited("b", "crash", abnormal=True, is_running=running("a")) == []
    w.link("a", "b", trap_exits=False)
    w.monitor("a", "c", alive=True)
    w.monitor("c", "a", alive=True)
    w.forget("a")
    assert w.linked("b") == frozenset()
    assert w.exited("c", "crash", abnormal=True, is_running=running("a", "b")) == []
    assert w.exited("a", "crash", abnormal=True, is_running=running("b", "c")) == []


def test_watches_monitors_are_capped_counting_undelivered_notices() -> None:
    import pytest

    from cellmesh.actors.errors import RootRequestError

    w = Watches(max_monitors=3)
    w.monitor("a", "b", alive=True)
    w.monitor("a", "ghost", alive=False)  # a noproc notice, not yet delivered
    w.monitor("a", "c", alive=True)
    with pytest.raises(RootRequestError, match="max_monitors") as info:
        w.monitor("a", "d", alive=True)
    assert info.value.subject == "a"
    w.delivered("a")  # the noproc notice arrived
    w.monitor("a", "d", alive=True)
    assert len(w.exited("b", "normal", abnormal=False, is_running=running())) == 1
    assert w.load("a") == 3  # two held, one notice on its way


def test_watches_links_are_capped_per_cell_on_both_sides() -> None:
    import pytest

    from cellmesh.actors.errors import RootRequestError

    w = Watches(max_links=1)
    w.link("a", "b", trap_exits=False)
    w.link("a", "b", trap_exits=True)  # the same link again is no new link
    with pytest.raises(RootRequestError, match="max_links"):
        w.link("a", "c", trap_exits=False)
    with pytest.raises(RootRequestError, match=r"^b:"):
        w.link("c", "b", trap_exits=False)


def test_watches_a_cells_monitors_end_with_it_and_only_it_may_cancel_them() -> None:
    w = Watches()
    ref, _ = w.monitor("a", "b", alive=True)
    w.demonitor(ref, watcher="mallory")
    assert w.load("a") == 1
    w.exited("a", "crash", abnormal=True, is_running=running())
    assert w.load("a") == 0
    assert w.exited("b", "crash", abnormal=True, is_running=running()) == []


def test_watches_a_cell_that_announced_trapping_is_spared_when_linked_by_another() -> None:
    w = Watches()
    w.set_trapping("b", True)  # b's CellReady: its class traps exits
    w.link("a", "b", trap_exits=False)  # a asked, and a does not trap
    assert w.exited("a", "crash", abnormal=True, is_running=lambda _: True) == [
        Notify(watcher="b", down=CellDown(name="a", reason="crash", ref=0))
    ]
    w.set_trapping("b", False)  # its next process does not trap
    w.link("a", "b", trap_exits=False)
    assert w.exited("a", "crash", abnormal=True, is_running=lambda _: True) == [
        KillLinked(name="b", cause="a", reason="crash")
    ]
