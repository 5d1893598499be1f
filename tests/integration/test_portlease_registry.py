"""portlease against real sockets, files and processes (127.0.0.1 / ::1 only).

Every child process is reaped in a ``finally``; ordering between processes goes through pipes
(a child prints a line when it reached a state; the test writes a line to let it go on) or
through a condition on the registry that the test polls, never through a bare sleep.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from portlease import (
    InvalidHost,
    InvalidRequest,
    Lease,
    LeaseClosed,
    LeaseTimeout,
    PortBusy,
    PortleaseWarning,
    Registry,
    RegistryError,
)
from portlease.records import LeaseTable, WaiterRecord, decode_table, encode_table

CHILD_PRELUDE = """
import json, os, socket, sys, time
from portlease import Registry
def say(*parts):
    print(*parts, flush=True)
def hear():
    return sys.stdin.readline().strip()
"""


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "registry")


@contextlib.contextmanager
def child(code: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    """A Python child running ``code`` with line-based pipes; killed and reaped on exit."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD_PRELUDE + textwrap.dedent(code), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()


def read_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, f"child {proc.pid} exited early (rc={proc.poll()})"
    return line.strip()


def tell(proc: subprocess.Popen[str], line: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll a condition on shared state (the registry) until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def free_port(registry: Registry) -> int:
    with registry.acquire("probe") as lease:
        return lease.port


# --- acquire / release -------------------------------------------------------------------------


def test_acquire_returns_listening_socket_and_records_it(registry: Registry) -> None:
    with registry.acquire("linear", meta={"url": "https://mcp.example/"}) as lease:
        assert lease.socket.get_inheritable() is False
        clients = [socket.create_connection(("127.0.0.1", lease.port)) for _ in range(3)]
        for client in clients:
            client.close()
        (record,) = registry.list()
        assert record == lease.record
        assert (record.port, record.owner, record.pid) == (lease.port, "linear", os.getpid())
        assert record.meta == {"url": "https://mcp.example/"}
        assert lease.url("/callback") == f"http://127.0.0.1:{lease.port}/callback"
        assert stat.S_IMODE(registry.lease_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(registry.directory.stat().st_mode) == 0o700
    assert registry.list(stale=True) == []


def test_release_is_idempotent_and_lease_refuses_reuse(registry: Registry) -> None:
    lease = registry.acquire("linear")
    port = lease.port
    lease.release()
    lease.release()
    assert lease.released
    assert registry.list(stale=True) == []
    with pytest.raises(LeaseClosed, match="released"):
        _ = lease.socket
    with pytest.raises(LeaseClosed), lease:
        pass
    with pytest.raises(LeaseClosed):
        lease.hand_over(os.getpid())
    assert lease.url("/x") == f"http://127.0.0.1:{port}/x"
    with socket.socket() as probe_socket:  # the port is really free again
        probe_socket.bind(("127.0.0.1", port))


def test_release_only_removes_its_own_record(registry: Registry) -> None:
    first = registry.acquire("one")
    second = registry.acquire("two")
    first.release()
    assert [r.id for r in registry.list()] == [second.id]
    second.release()


def test_lease_collected_without_release_warns_and_releases(registry: Registry) -> None:
    leases = [registry.acquire("forgetful")]
    port = leases[0].port
    with pytest.warns(ResourceWarning, match="never released"):
        leases.clear()  # the last reference goes: CPython finalizes the lease right here
    gc.collect()
    assert registry.list(stale=True) == []
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", port))


def test_close_socket_keeps_record(registry: Registry) -> None:
    with registry.acquire("holder") as lease:
        lease.close_socket()
        lease.close_socket()
        with pytest.raises(LeaseClosed, match="close_socket"):
            _ = lease.socket
        assert [r.id for r in registry.list()] == [lease.id]
    assert registry.list() == []


def test_ipv6_and_localhost(registry: Registry) -> None:
    with registry.acquire("v4name", host="localhost") as lease:
        assert lease.host == "localhost"
        assert lease.socket.getsockname()[0] == "127.0.0.1"
        assert lease.url("/cb") == f"http://localhost:{lease.port}/cb"
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        lease6 = registry.acquire("v6", host="::1")
    except PortBusy as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    with lease6:
        assert lease6.url("/cb") == f"http://[::1]:{lease6.port}/cb"
        with socket.create_connection(("::1", lease6.port)):
            pass


def test_bad_arguments_bind_and_write_nothing(registry: Registry) -> None:
    with pytest.raises(InvalidHost, match=r"0\.0\.0\.0"):
        registry.acquire("x", host="0.0.0.0")
    with pytest.raises(InvalidRequest, match="port"):
        registry.acquire("x", port=70000)
    with pytest.raises(InvalidRequest, match="wait"):
        registry.acquire("x", port=5, wait=-1)
    with pytest.raises(InvalidRequest, match="meta"):
        registry.acquire("x", meta={"n": 1})  # type: ignore[dict-item]
    assert not registry.lease_file.exists()


# --- staleness ---------------------------------------------------------------------------------


KILLED_HOLDER = """
reg = Registry(sys.argv[1])
lease = reg.acquire("doomed")
say(lease.port, lease.id)
hear()
"""


def test_killed_holder_leaves_stale_record_that_next_acquire_prunes(registry: Registry) -> None:
    with child(KILLED_HOLDER, str(registry.directory)) as proc:
        port, lease_id = read_line(proc).split()
        assert [r.id for r in registry.list()] == [lease_id]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert registry.list() == []
    (stale,) = registry.list(stale=True)
    assert (stale.id, stale.port) == (lease_id, int(port))
    with registry.acquire("next") as lease:
        ids = [r.id for r in registry.list(stale=True)]
        assert ids == [lease.id]


def test_pid_reuse_makes_record_stale(registry: Registry) -> None:
    with registry.acquire("real") as lease:
        own = lease.record
    impostor = replace(own, id="reused", pid_started=own.pid_started - 3600)
    honest = replace(own, id="honest")
    registry.lease_file.write_bytes(encode_table(LeaseTable((impostor, honest))))
    assert [r.id for r in registry.list()] == ["honest"]
    assert sorted(r.id for r in registry.list(stale=True)) == ["honest", "reused"]
    assert [r.id for r in registry.prune()] == ["reused"]
    assert [r.id for r in registry.list(stale=True)] == ["honest"]


# --- corrupt files -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [b"\x00garbage\xff{", b'{"version":1,"leases":[{"id":"ab","port":5', b'{"version":99}'],
    ids=["garbage", "truncated", "wrong-version"],
)
def test_corrupt_file_is_moved_aside_and_work_goes_on(registry: Registry, content: bytes) -> None:
    registry.lease_file.write_bytes(content)
    with pytest.warns(PortleaseWarning, match="moved it aside"):
        assert registry.list() == []
    (aside,) = registry.directory.glob("leases.json.corrupt-*")
    assert aside.read_bytes() == content
    with registry.acquire("after") as lease:
        assert [r.id for r in registry.list()] == [lease.id]
    assert list(registry.directory.glob("leases.json.corrupt-*")) == [aside]


def test_two_corrupt_files_are_both_kept(registry: Registry) -> None:
    for content in (b"first", b"second"):
        registry.lease_file.write_bytes(content)
        with pytest.warns(PortleaseWarning):
            registry.prune()
    kept = sorted(p.read_bytes() for p in registry.directory.glob("leases.json.corrupt-*"))
    assert kept == [b"first", b"second"]


# --- fixed ports -------------------------------------------------------------------------------


FIXED_HOLDER = """
reg = Registry(sys.argv[1])
lease = reg.acquire(sys.argv[3], port=int(sys.argv[2]), wait=30.0)
say("held", time.monotonic())
hear()
released = time.monotonic()
lease.release()
say("released", released)
hear()
"""


def waiter_count(registry: Registry, port: int) -> int:
    if not registry.lease_file.exists():
        return 0
    table = decode_table(registry.lease_file.read_bytes())
    return sum(1 for w in table.waiters if w.port == port)


def test_fixed_port_goes_to_waiters_in_arrival_order(registry: Registry) -> None:
    port = free_port(registry)
    directory = str(registry.directory)
    with child(FIXED_HOLDER, directory, str(port), "first") as first:
        assert read_line(first).startswith("held")
        with child(FIXED_HOLDER, directory, str(port), "second") as second:
            wait_until(lambda: waiter_count(registry, port) == 1)  # second queued first
            with child(FIXED_HOLDER, directory, str(port), "third") as third:
                wait_until(lambda: waiter_count(registry, port) == 2)
                (holder,) = registry.list()
                assert holder.owner == "first"
                tell(first, "release")
                first_released = float(read_line(first).split()[1])
                second_held = float(read_line(second).split()[1])
                assert second_held >= first_released
                assert [r.owner for r in registry.list()] == ["second"]
                assert waiter_count(registry, port) == 1  # third still queued
                tell(second, "release")
                second_released = float(read_line(second).split()[1])
                third_held = float(read_line(third).split()[1])
                assert third_held >= second_released
                assert [r.owner for r in registry.list()] == ["third"]
                for proc in (first, second, third):
                    assert proc.stdin is not None
                    proc.stdin.close()  # EOF: every remaining hear() returns at once
                for proc in (first, second, third):
                    assert proc.wait(timeout=30) == 0
    assert registry.list(stale=True) == []


SLEEPER = """
say("up")
hear()
"""


def test_newcomer_cannot_jump_the_queue(registry: Registry) -> None:
    port = free_port(registry)
    with child(SLEEPER) as sleeper:
        read_line(sleeper)
        started = psutil.Process(sleeper.pid).create_time()
        now = time.time()
        queued = WaiterRecord(
            id="queued", port=port, pid=sleeper.pid, pid_started=started,
            ticket=1, created=now, deadline=now + 60,
        )  # fmt: skip
        registry.lease_file.write_bytes(encode_table(LeaseTable((), (queued,))))
        # The port is free, but a live waiter came first: a newcomer must not take it.
        with pytest.raises(LeaseTimeout) as caught:
            registry.acquire("newcomer", port=port, wait=0)
        assert caught.value.holder is None
        with pytest.raises(LeaseTimeout):
            registry.acquire("newcomer", port=port, wait=0.2)
        assert waiter_count(registry, port) == 1  # ours was removed, the queued one stays
        sleeper.kill()
        sleeper.wait(timeout=30)
    with registry.acquire("newcomer", port=port, wait=0) as lease:  # the dead waiter is pruned
        assert lease.port == port
    assert waiter_count(registry, port) == 0


def test_wait_zero_times_out_at_once_with_holder(registry: Registry) -> None:
    with registry.acquire("holder") as held:
        started = time.monotonic()
        with pytest.raises(LeaseTimeout) as caught:
            registry.acquire("late", port=held.port, wait=0)
        assert time.monotonic() - started < 1.0
        assert caught.value.port == held.port
        assert caught.value.holder == held.record
        assert isinstance(caught.value, TimeoutError)


def test_wait_timeout_leaves_no_waiter_behind(registry: Registry) -> None:
    with registry.acquire("holder") as held:
        started = time.monotonic()
        with pytest.raises(LeaseTimeout) as caught:
            registry.acquire("late", port=held.port, wait=0.3)
        assert time.monotonic() - started >= 0.3
        assert caught.value.waited >= 0.3
        assert waiter_count(registry, held.port) == 0
        assert [r.id for r in registry.list()] == [held.id]


FOREIGN_LISTENER = """
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen(1)
say(sock.getsockname()[1])
hear()
"""


def test_foreign_listener_gives_port_busy_naming_it(registry: Registry) -> None:
    with child(FOREIGN_LISTENER) as proc:
        port = int(read_line(proc))
        started = time.monotonic()
        with pytest.raises(PortBusy) as caught:
            registry.acquire("mine", port=port, wait=10)
        assert time.monotonic() - started < 5  # at once, not after the wait
        assert caught.value.port == port
        assert caught.value.pid == proc.pid
        assert caught.value.process_name
        assert f"pid {proc.pid}" in str(caught.value)
    assert registry.list(stale=True) == []
    assert waiter_count(registry, port) == 0


# --- hand-over ---------------------------------------------------------------------------------


SERVER = """
import socket, sys
sock = socket.socket(fileno=int(sys.argv[1]))
print("serving", flush=True)
while True:
    conn, _ = sock.accept()
    conn.sendall(b"hello")
    conn.close()
"""

OWNER_HANDING_OVER = """
import subprocess
reg = Registry(sys.argv[1])
lease = reg.acquire("owner")
fd = lease.socket.fileno()
server = subprocess.Popen(
    [sys.executable, "-c", sys.argv[2], str(fd)], pass_fds=[fd], stdout=subprocess.PIPE
)
server.stdout.readline()
lease.hand_over(server.pid)
lease.close_socket()
say(lease.port, server.pid)
hear()
os._exit(0)  # the owner dies without releasing; the server lives on
"""


def test_hand_over_keeps_record_live_while_server_lives(registry: Registry) -> None:
    server_pid = None
    try:
        with child(OWNER_HANDING_OVER, str(registry.directory), SERVER) as owner:
            port_text, pid_text = read_line(owner).split()
            port, server_pid = int(port_text), int(pid_text)
            tell(owner, "die")
            assert owner.wait(timeout=30) == 0
        (record,) = registry.list()
        assert (record.port, record.server_pid) == (port, server_pid)
        assert record.server_started == pytest.approx(
            psutil.Process(server_pid).create_time(), abs=1
        )
        with socket.create_connection(("127.0.0.1", port)) as conn:
            assert conn.recv(5) == b"hello"
        with pytest.raises(LeaseTimeout):
            registry.acquire("other", port=port, wait=0)
        psutil.Process(server_pid).kill()
        psutil.Process(server_pid).wait(timeout=30)
        server_pid = None
        assert registry.list() == []
        assert [r.port for r in registry.prune()] == [port]
    finally:
        if server_pid is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(server_pid).kill()


def test_hand_over_to_missing_pid_is_refused(registry: Registry) -> None:
    with registry.acquire("owner") as lease:
        proc = subprocess.Popen([sys.executable, "-c", "pass"])
        proc.wait(timeout=30)
        with pytest.raises(RegistryError, match="no such process"):
            lease.hand_over(proc.pid)
        assert lease.record.server_pid is None
        assert registry.list()[0].server_pid is None


# --- directories -------------------------------------------------------------------------------


def test_unusable_directory_is_a_registry_error(tmp_path: Path) -> None:
    regular = tmp_path / "file"
    regular.write_text("x")
    with pytest.raises(RegistryError, match="not a directory"):
        Registry(regular)


def test_default_directory_must_be_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PORTLEASE_DIR", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    registry = Registry()
    assert registry.directory == tmp_path / "portlease"
    assert stat.S_IMODE(registry.directory.stat().st_mode) == 0o700
    registry.directory.chmod(0o777)
    with pytest.raises(RegistryError, match="world-writable"):
        Registry()


def test_portlease_dir_env_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTLEASE_DIR", str(tmp_path / "env-dir"))
    assert Registry().directory == tmp_path / "env-dir"


def test_lock_timeout_is_a_registry_error(registry: Registry) -> None:
    import fcntl

    impatient = Registry(registry.directory, lock_timeout=0.05)
    with open(registry.directory / "leases.json.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with pytest.raises(RegistryError, match="timed out") as caught:
            impatient.list()
        assert caught.value.__cause__ is not None


def test_waiting_for_the_lock_resumes_when_it_is_released(registry: Registry) -> None:
    import fcntl
    import threading

    results: list[object] = []
    with open(registry.directory / "leases.json.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        worker = threading.Thread(target=lambda: results.append(registry.acquire("blocked")))
        worker.start()
        worker.join(0.2)
        assert worker.is_alive()  # it waits for the lock...
        fcntl.flock(lock, fcntl.LOCK_UN)
        worker.join(10)  # ...and goes on once it is released
    assert not worker.is_alive()
    (lease,) = results
    assert isinstance(lease, Lease)
    assert [r.id for r in registry.list()] == [lease.id]
    lease.release()


# --- CLI ---------------------------------------------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "portlease", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_ls_empty(registry: Registry) -> None:
    result = cli("ls", "--dir", str(registry.directory))
    assert (result.returncode, result.stdout, result.stderr) == (0, "no leases\n", "")


def test_cli_ls_table_json_all_and_gc(registry: Registry) -> None:
    with registry.acquire("linear", meta={"url": "https://x/"}) as lease:
        stale = replace(lease.record, id="gone", port=1, pid_started=lease.record.pid_started - 99)
        table = decode_table(registry.lease_file.read_bytes())
        registry.lease_file.write_bytes(encode_table(table.with_lease(stale)))
        directory = str(registry.directory)

        table_out = cli("ls", "--dir", directory)
        assert table_out.returncode == 0
        header, *rows = table_out.stdout.splitlines()
        assert header.split() == ["PORT", "HOST", "OWNER", "PID", "PROCESS", "AGE", "STATE"]
        assert len(rows) == 1
        assert rows[0].split()[:4] == [str(lease.port), "127.0.0.1", "linear", str(os.getpid())]
        assert rows[0].split()[-1] == "live"

        everything = cli("ls", "--all", "--dir", directory)
        states = {line.split()[0]: line.split()[-1] for line in everything.stdout.splitlines()[1:]}
        assert states == {"1": "stale", str(lease.port): "live"}

        as_json = json.loads(cli("ls", "--json", "--all", "--dir", directory).stdout)
        assert {(item["id"], item["state"]) for item in as_json} == {
            (lease.id, "live"),
            ("gone", "stale"),
        }
        assert as_json[0]["meta"] in ({}, {"url": "https://x/"})

        only_live = json.loads(cli("ls", "--json", "--dir", directory).stdout)
        assert [item["id"] for item in only_live] == [lease.id]

        collected = cli("gc", "--dir", directory)
        assert collected.returncode == 0
        assert collected.stdout.splitlines()[0] == "removed 1 stale lease(s)"
        assert "stale" in collected.stdout.splitlines()[2]
        assert cli("gc", "--dir", directory).stdout == "removed 0 stale lease(s)\n"


def test_cli_corrupt_file_warns_without_traceback(registry: Registry) -> None:
    registry.lease_file.write_bytes(b"{not json")
    result = cli("ls", "--dir", str(registry.directory))
    assert result.returncode == 0
    assert result.stdout == "no leases\n"
    assert result.stderr.startswith("portlease: warning: ")
    assert "moved it aside" in result.stderr
    assert "Traceback" not in result.stderr
    (aside,) = registry.directory.glob("leases.json.corrupt-*")
    assert str(aside) in result.stderr


def test_cli_unusable_dir_exits_1_with_one_line(tmp_path: Path) -> None:
    regular = tmp_path / "file"
    regular.write_text("x")
    result = cli("ls", "--dir", str(regular))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("portlease: error: ")
    assert result.stderr.count("\n") == 1


def test_cli_usage_error_exits_2() -> None:
    assert cli().returncode == 2
    assert cli("frobnicate").returncode == 2
