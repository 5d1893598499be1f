"""``Registry.acquire(port={...})``: the first free port of a set (hermes's CIMD redirect ports),
queueing behind our own leases, ``PortBusy`` when every port is foreign. Real sockets and
processes on 127.0.0.1; ordering through pipes and registry conditions, never a bare sleep."""

from __future__ import annotations

import json
import time

import pytest

from portlease import InvalidRequest, LeaseTimeout, PortBusy, Registry
from portlease.records import decode_table

from support.children import child, read_line, tell
from support.ports import free_ports
from support.waiting import wait_for

SET_HOLDER = """
reg = Registry(sys.argv[1])
lease = reg.acquire(sys.argv[3], port=json.loads(sys.argv[2]), wait=30.0)
say("held", lease.port, time.monotonic())
hear()
released = time.monotonic()
lease.release()
say("released", released)
hear()
"""

FOREIGN_LISTENER = """
sock = socket.socket()
sock.bind(("127.0.0.1", int(sys.argv[1])))
sock.listen(1)
say("up")
hear()
"""


def waiters(registry: Registry) -> list[tuple[int, int]]:
    """(port, ticket) of every waiter entry."""
    if not registry.lease_file.exists():
        return []
    table = decode_table(registry.lease_file.read_bytes())
    return sorted((w.port, w.ticket) for w in table.waiters)


def test_the_first_free_port_of_a_sequence_and_of_a_set(registry: Registry) -> None:
    ports = free_ports(3)
    with registry.acquire("a", port=ports) as first:
        assert first.port == ports[0]
        with registry.acquire("b", port=set(ports)) as second:
            assert second.port == ports[1]  # a set is tried in ascending order
            with registry.acquire("c", port=tuple(reversed(ports))) as third:
                assert third.port == ports[2]
                assert third.socket.getsockname()[1] == ports[2]
            assert sorted(r.port for r in registry.list()) == ports[:2]
    assert registry.list(stale=True) == []


def test_a_port_bound_by_a_foreign_process_is_skipped(registry: Registry) -> None:
    ports = free_ports(2)
    with child(FOREIGN_LISTENER, str(ports[0])) as foreign:
        assert read_line(foreign) == "up"
        with registry.acquire("mine", port=ports, wait=5) as lease:
            assert lease.port == ports[1]


def test_every_port_foreign_is_port_busy_at_once_naming_the_holders(registry: Registry) -> None:
    ports = free_ports(2)
    with (
        child(FOREIGN_LISTENER, str(ports[0])) as one,
        child(FOREIGN_LISTENER, str(ports[1])) as two,
    ):
        assert read_line(one) == "up" and read_line(two) == "up"
        started = time.monotonic()
        with pytest.raises(PortBusy) as caught:
            registry.acquire("mine", port=ports, wait=10)
        assert time.monotonic() - started < 5  # at once, not after the wait
        message = str(caught.value)
        assert f"pid {one.pid}" in message and f"pid {two.pid}" in message
        assert all(str(p) in message for p in ports)
    assert registry.list(stale=True) == [] and waiters(registry) == []


def test_all_held_by_our_leases_times_out_naming_a_holder_and_leaves_no_waiter(
    registry: Registry,
) -> None:
    ports = free_ports(2)
    with registry.acquire("a", port=ports[0]) as a, registry.acquire("b", port=ports[1]):
        with pytest.raises(LeaseTimeout) as caught:
            registry.acquire("late", port=ports, wait=0)
        assert caught.value.holder == a.record
        started = time.monotonic()
        with pytest.raises(LeaseTimeout):
            registry.acquire("late", port=ports, wait=0.3)
        assert time.monotonic() - started >= 0.3
        assert waiters(registry) == []


def test_waiters_for_a_set_are_served_in_arrival_order(registry: Registry) -> None:
    ports = free_ports(2)
    directory, wanted = str(registry.directory), json.dumps(ports)
    with (
        registry.acquire("a", port=ports[0]) as a,
        registry.acquire("b", port=ports[1]) as b,
        child(SET_HOLDER, directory, wanted, "first") as first,
    ):
        # One entry per held port, one ticket.
        wait_for(lambda: len(waiters(registry)) == 2, 30)
        assert len({ticket for _, ticket in waiters(registry)}) == 1
        with child(SET_HOLDER, directory, wanted, "second") as second:
            wait_for(lambda: len(waiters(registry)) == 4, 30)
            b.release()  # the second port frees: the first waiter gets it
            held = read_line(first).split()
            assert held[:2] == ["held", str(ports[1])]
            wait_for(lambda: len(waiters(registry)) == 2, 30)  # first's entries are gone
            a.release()
            held = read_line(second).split()
            assert held[:2] == ["held", str(ports[0])]
            assert {r.owner: r.port for r in registry.list()} == {
                "first": ports[1],
                "second": ports[0],
            }
            for proc in (first, second):
                tell(proc, "release")
                read_line(proc)
                assert proc.stdin is not None
                proc.stdin.close()
            for proc in (first, second):
                assert proc.wait(timeout=30) == 0
    assert registry.list(stale=True) == [] and waiters(registry) == []


@pytest.mark.parametrize(
    "port",
    [[], [0, 1], [70000], ["80"], "27890", b"ab", {1: 2}, [True], 1.5, None, list(range(1, 1100))],
)
def test_bad_port_sets_are_refused_before_anything_is_bound(
    registry: Registry, port: object
) -> None:
    with pytest.raises(InvalidRequest):
        registry.acquire("x", port=port)  # type: ignore[arg-type]
    assert registry.list(stale=True) == []


def test_an_int_port_is_unchanged(registry: Registry) -> None:
    (port,) = free_ports(1)
    with registry.acquire("x", port=port) as lease:
        assert lease.port == port
        with pytest.raises(LeaseTimeout):
            registry.acquire("y", port=port, wait=0)
