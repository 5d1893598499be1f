"""Large and malformed port sets: refused with ``InvalidRequest``, refused quickly and briefly when
every port is foreign, and waited for without flooding the lease file or holding the lock.

Real sockets on 127.0.0.1. Timing is not asserted (a generous ``timeout`` mark guards against a
regression to tens of seconds); ``scripts/bench_port_sets.py`` measures it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from portlease import InvalidRequest, Lease, PortBusy, Registry
from portlease.records import LeaseTable, WaiterRecord, fixed_port_turn

from support.waiting import wait_for


@pytest.mark.parametrize(
    "ports",
    [{5000, "a"}, frozenset({5000, None}), {5000, 1.5}, [5000, "5001"], {5000, (1, 2)}],
)
def test_a_set_of_mixed_types_is_an_invalid_request(tmp_path: Path, ports: Any) -> None:
    """sorted() of {5000, "a"} raised TypeError before the items were checked."""
    with pytest.raises(InvalidRequest, match="every port of a port set"):
        Registry(tmp_path).acquire("t", port=ports)


@pytest.fixture
def foreign_ports() -> Iterator[list[int]]:
    """1,024 loopback ports bound and listening by plain sockets of this process (no lease)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(1024):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sock.listen(1)
            sockets.append(sock)
        yield sorted(s.getsockname()[1] for s in sockets)
    finally:
        for sock in sockets:
            sock.close()


@pytest.mark.timeout(30)
def test_a_large_foreign_set_is_refused_with_a_short_message(
    tmp_path: Path, foreign_ports: list[int]
) -> None:
    """Before: one look at every socket of the machine per port (~20 s) and a message naming
    all 1,024 ports and holders (~34,000 characters)."""
    with pytest.raises(PortBusy) as caught:
        Registry(tmp_path).acquire("t", port=set(foreign_ports), wait=5.0)
    message = str(caught.value)
    assert len(message) < 600, message
    assert caught.value.port == foreign_ports[0]
    assert "1024 ports" in message
    assert f"{foreign_ports[0]}-{foreign_ports[-1]}" in message
    assert "and 1021 more" in message
    assert Registry(tmp_path).list() == []


def test_set_turns_agrees_with_fixed_port_turn(tmp_path: Path) -> None:
    """The one-pass judgement of a set is the per-port judgement, port by port."""
    from portlease.records import set_turns  # new: imported here so the others run on the base

    registry = Registry(tmp_path)
    held = [registry.acquire("h", port=0) for _ in range(3)]
    try:
        with registry._file.locked() as table:
            pass
        ports = [lease.port for lease in held] + [1, 2]
        ids = {p: f"{p:016x}" for p in ports}
        waiters = tuple(
            WaiterRecord(
                id=f"{i + 100:016x}",
                port=ports[i % len(ports)],
                pid=1,
                pid_started=0.0,
                ticket=i + 1,
                created=0.0,
                deadline=1e12,
            )
            for i in range(7)
        )
        own = WaiterRecord(
            id=ids[ports[1]],
            port=ports[1],
            pid=1,
            pid_started=0.0,
            ticket=4,
            created=0.0,
            deadline=1e12,
        )
        table = LeaseTable(table.leases, (*waiters, own))
        turns = set_turns(table, ports, ids)
        for port in ports:
            assert turns[port] == fixed_port_turn(table, port, ids[port])
    finally:
        for lease in held:
            lease.release()


def _held(registry: Registry, count: int) -> list[Lease]:
    return [registry.acquire("holder", port=0) for _ in range(count)]


@pytest.mark.timeout(60)
def test_a_set_waiter_queues_a_bounded_number_of_entries_and_rarely_locks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: one waiter entry per held port (64 here; 1,024 for a large set, in a file every
    acquire of every process reads and rewrites), and a locked read-prune-judge of the whole
    table at every poll (thirty such waiters kept ``acquire(port=0)`` from the lock for more
    than its 10 s timeout). Now at most 8 entries, and a waiter looks at the file without the
    lock while nothing changes."""
    holder = Registry(tmp_path)
    leases = _held(holder, 64)
    ports = {lease.port for lease in leases}
    waiter = Registry(tmp_path)

    locked_rounds = 0
    real_transaction = waiter._file.transaction

    def counting_transaction(*args: Any) -> AbstractContextManager[Any]:
        nonlocal locked_rounds
        locked_rounds += 1
        return real_transaction(*args)

    monkeypatch.setattr(waiter._file, "transaction", counting_transaction)
    polls = 0
    real_sleep = time.sleep

    class CountingTime:
        """``portlease.registry.time`` with its polls counted (only the waiter sleeps there)."""

        monotonic = staticmethod(time.monotonic)
        time = staticmethod(time.time)

        @staticmethod
        def sleep(seconds: float) -> None:
            nonlocal polls
            polls += 1
            real_sleep(seconds)

    monkeypatch.setattr("portlease.registry.time", CountingTime)
    got: list[Lease] = []
    thread = threading.Thread(
        target=lambda: got.append(waiter.acquire("waiter", port=ports, wait=30.0)), daemon=True
    )
    thread.start()
    try:
        wait_for(lambda: polls >= 20, timeout=20.0)
        with holder._file.locked() as table:
            entries = [w for w in table.waiters]
        assert 1 <= len(entries) <= 8
        assert locked_rounds <= 4, (locked_rounds, polls)
        first = min(ports)
        for lease in leases:
            if lease.port == first:
                lease.release()
        thread.join(timeout=20.0)
        assert got and got[0].port == first
        with holder._file.locked() as table:
            assert table.waiters == ()
    finally:
        for lease in leases + got:
            lease.release()


@pytest.mark.parametrize("command", [["ls"], ["ls", "--json"], ["gc"]])
def test_ls_and_gc_never_create_a_named_directory(
    tmp_path: Path, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: ``portlease ls --dir /mistyped/path`` created the path and printed ``no leases``."""
    from portlease.cli import main

    missing = tmp_path / "mistyped" / "path"
    assert main([*command, "--dir", str(missing)]) == 2
    assert not (tmp_path / "mistyped").exists()
    err = capsys.readouterr().err
    assert err.startswith("portlease: error: no registry directory")
    assert str(missing) in err


def test_ls_and_gc_on_a_missing_default_directory_say_no_leases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing has leased a port yet: nothing to list, nothing created, exit 0."""
    from portlease import cli

    default = tmp_path / "runtime" / "portlease"
    monkeypatch.delenv("PORTLEASE_DIR", raising=False)
    monkeypatch.setattr(cli, "default_directory", lambda: default)
    assert cli.main(["ls"]) == 0
    assert capsys.readouterr().out == "no leases\n"
    assert cli.main(["ls", "--json"]) == 0
    assert capsys.readouterr().out == "[]\n"
    assert cli.main(["gc"]) == 0
    assert capsys.readouterr().out == "removed 0 stale lease(s)\n"
    assert not (tmp_path / "runtime").exists()
