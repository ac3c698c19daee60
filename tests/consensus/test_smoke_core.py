"""Smoke test of the core API through the hand-driven network (section 5)."""

from cellmesh.testing.raftnet import RaftNet


def test_core_elects_replicates_and_fails_over() -> None:
    """§5.2 + §5.3: elect, replicate, lose the leader, elect again, catch up."""
    net = RaftNet.create([1, 2, 3])
    net.campaign(1)
    assert net.leader() == 1
    net.nodes[1].propose(b"x")
    net.deliver()
    net.tick(2)
    assert all(net.applied_data(n) == [b"x"] for n in net.nodes)
    net.down.add(1)
    net.tick(40)
    new = net.leader()
    assert new in (2, 3)
    net.nodes[new].propose(b"y")
    net.tick(3)
    net.down.clear()
    net.tick(5)
    assert all(net.applied_data(n) == [b"x", b"y"] for n in net.nodes)
