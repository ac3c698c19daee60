"""Parsers of hostile input: garbage in, only SandboxConfigError out."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from cellmesh.sandbox import SandboxConfigError, WorkloadEnv, parse_size
from cellmesh.sandbox._limits import CgroupLeaves


@given(st.text(max_size=40) | st.from_regex(r"\A[0-9]{1,400}(\.[0-9]+)?[KMGTkmgt]?\Z"))
def test_parse_size_returns_positive_int_or_config_error(text: str) -> None:
    try:
        value = parse_size(text)
    except SandboxConfigError:
        return
    assert isinstance(value, int)
    assert value > 0


@given(st.lists(st.tuples(st.text(max_size=8), st.text(max_size=8)), max_size=6))
def test_workload_env_accepts_exactly_the_valid_pairs(pairs: list[tuple[str, str]]) -> None:
    valid = all(k and "=" not in k and "\0" not in k and "\0" not in v for k, v in pairs)
    unique = len({k for k, _ in pairs}) == len(pairs)
    try:
        env = WorkloadEnv(items=pairs)
    except SandboxConfigError:
        assert not (valid and unique)
        return
    assert valid and unique
    assert env.as_dict() == dict(pairs)


def test_oom_kill_counter_is_read_from_memory_events(tmp_path: Path) -> None:
    leaf = tmp_path / "leaf"
    leaf.mkdir()
    leaves = CgroupLeaves(v2=leaf)
    assert leaves.oom_kills() == 0  # no file: no evidence
    (leaf / "memory.events").write_text("low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n")
    assert leaves.oom_kills() == 1
