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
import time
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

from support.children import child, read_line, tell
from support.waiting import bounded, wait_for


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
            wait_for(lambda: waiter_count(registry, port) == 1, 20)  # second queued first
            with child(FIXED_HOLDER, directory, str(port), "third") as third:
                wait_for(lambda: waiter_count(registry, port) == 2, 20)
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


def test_a_directory_in_the_lock_files_place_is_named_and_kept(registry: Registry) -> None:
    lock = registry.directory / "leases.json.lock"
    lock.mkdir()
    with pytest.raises(RegistryError, match="a directory is in its place") as caught:
        registry.list()
    assert "remove it by hand" in str(caught.value)
    assert caught.value.path == str(lock)
    assert lock.is_dir()  # never moved aside: another process may hold the lock on it


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


# --- hostile lease files and directories (issue 6) ---------------------------------------------

#: A lease file that is valid JSON but nested past the parser's recursion limit.
NESTED = b"[" * 100_000 + b"]" * 100_000


def kept_aside(registry: Registry) -> Path:
    (aside,) = registry.directory.glob("leases.json.corrupt-*")
    return aside


def test_fifo_as_lease_file_is_kept_aside_at_once(registry: Registry) -> None:
    os.mkfifo(registry.lease_file, 0o600)
    started = time.monotonic()
    with pytest.warns(PortleaseWarning, match=r"\(a FIFO, not a regular file\); moved it aside"):
        assert bounded(registry.list) == []
    assert time.monotonic() - started < 1.0
    assert stat.S_ISFIFO(kept_aside(registry).stat().st_mode)  # kept, not deleted
    assert not registry.lease_file.exists()
    with registry.acquire("after") as lease:  # and the registry works again
        assert [r.id for r in registry.list()] == [lease.id]


def test_nested_json_lease_file_is_kept_aside(registry: Registry) -> None:
    registry.lease_file.write_bytes(NESTED)
    with pytest.warns(PortleaseWarning, match="nested too deeply"):
        assert registry.prune() == []
    assert kept_aside(registry).read_bytes() == NESTED


def test_directory_in_place_of_the_lease_file_is_kept_aside(registry: Registry) -> None:
    registry.lease_file.mkdir()
    (registry.lease_file / "inside").write_text("kept")
    with pytest.warns(PortleaseWarning, match="a directory, not a regular file"):
        lease = registry.acquire("after")
    with lease:
        assert [r.id for r in registry.list()] == [lease.id]
    assert (kept_aside(registry) / "inside").read_text() == "kept"


def test_symlink_in_place_of_the_lease_file_is_kept_aside(
    registry: Registry, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_bytes(encode_table(LeaseTable()))
    registry.lease_file.symlink_to(elsewhere)
    with pytest.warns(PortleaseWarning, match="symbolic link"):
        registry.list()
    assert kept_aside(registry).is_symlink()
    assert elsewhere.read_bytes() == encode_table(LeaseTable())  # the target is untouched


def test_huge_sparse_lease_file_is_kept_aside_unread(registry: Registry) -> None:
    registry.lease_file.touch()
    os.truncate(registry.lease_file, 2 * 1024**3)
    with pytest.warns(PortleaseWarning, match="2147483648 bytes, more than"):
        assert bounded(registry.list) == []
    assert kept_aside(registry).stat().st_size == 2 * 1024**3


@pytest.mark.parametrize(
    "content",
    [
        b'{"version":1,"leases":[{"id":"a","port":1,"host":["::1"],"owner":"o","pid":1,'
        b'"pid_started":1,"server_pid":null,"server_started":null,"created":1,"meta":{}}],'
        b'"waiters":[]}',
        b'{"version":1,"leases":[{"id":"a","port":1,"host":"::1","owner":"o","pid":1,'
        b'"pid_started":1' + b"0" * 400 + b',"server_pid":null,"server_started":null,'
        b'"created":1,"meta":{}}],"waiters":[]}',
        b'{"version":1,"leases":[{"id":"a","port":1,"host":"::1","owner":"o","pid":1,'
        b'"pid_started":1,"server_pid":null,"server_started":null,"created":1,'
        b'"meta":{"\\ud800":"x"}}],"waiters":[]}',
    ],
    ids=["unhashable-host", "int-beyond-float", "lone-surrogate"],
)
def test_wrongly_typed_lease_file_is_kept_aside(registry: Registry, content: bytes) -> None:
    registry.lease_file.write_bytes(content)
    with pytest.warns(PortleaseWarning, match="moved it aside"):
        registry.acquire("after").release()
    assert kept_aside(registry).read_bytes() == content


def test_fifo_in_place_of_the_temporary_file_is_kept_aside(registry: Registry) -> None:
    temp = registry.directory / "leases.json.tmp"
    os.mkfifo(temp, 0o600)
    with pytest.warns(PortleaseWarning, match="leases.json.tmp was in the way"):
        lease = bounded(lambda: registry.acquire("after"))
    assert isinstance(lease, Lease)
    with lease:
        assert [r.id for r in registry.list()] == [lease.id]
    (aside,) = registry.directory.glob("leases.json.tmp.corrupt-*")
    assert stat.S_ISFIFO(aside.stat().st_mode)


def test_world_writable_registry_directory_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "open"
    directory.mkdir()
    directory.chmod(0o777)
    with pytest.raises(RegistryError, match=r"open is group- or world-writable \(mode 777\)") as e:
        Registry(directory)
    assert e.value.path == str(directory)
    assert "chmod 700" in str(e.value)


def test_unsafe_portlease_dir_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / "env-dir"
    directory.mkdir()
    directory.chmod(0o770)
    monkeypatch.setenv("PORTLEASE_DIR", str(directory))
    with pytest.raises(RegistryError, match=r"group- or world-writable.*PORTLEASE_DIR"):
        Registry()


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_registry_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "theirs"
    directory.mkdir(mode=0o700)
    os.chown(directory, 12345, -1)
    with pytest.raises(RegistryError, match="belongs to uid 12345"):
        Registry(directory)


def test_default_directory_symlink_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PORTLEASE_DIR", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "portlease").symlink_to(real)
    with pytest.raises(RegistryError, match=r"symbolic link.*set PORTLEASE_DIR"):
        Registry()


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    return result.stderr


@pytest.mark.parametrize("command", ["ls", "gc"])
@pytest.mark.parametrize("hostile", ["fifo", "nested", "garbage", "directory", "sparse"])
def test_cli_hostile_lease_file_warns_and_goes_on(
    registry: Registry, command: str, hostile: str
) -> None:
    path = registry.lease_file
    if hostile == "fifo":
        os.mkfifo(path, 0o600)
    elif hostile == "nested":
        path.write_bytes(NESTED)
    elif hostile == "garbage":
        path.write_bytes(b"\x00\xff{[" * 1000)
    elif hostile == "directory":
        path.mkdir()
    else:
        path.touch()
        os.truncate(path, 2 * 1024**3)
    result = cli(command, "--dir", str(registry.directory))  # cli() bounds it with timeout=60
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] in ("no leases", "removed 0 stale lease(s)")
    line = one_error_line(result)
    assert line.startswith("portlease: warning: lease file ")
    assert str(kept_aside(registry)) in line


@pytest.mark.parametrize("command", ["ls", "gc"])
def test_cli_unsafe_dir_exits_1_with_one_line(tmp_path: Path, command: str) -> None:
    directory = tmp_path / "open"
    directory.mkdir()
    directory.chmod(0o777)
    result = cli(command, "--dir", str(directory))
    assert (result.returncode, result.stdout) == (1, "")
    line = one_error_line(result)
    assert line.startswith(f"portlease: error: unusable registry directory: directory {directory}")
    assert "world-writable" in line
    assert not (directory / "leases.json.lock").exists()  # refused before anything was made


def test_cli_unsafe_portlease_dir_exits_1_with_one_line(tmp_path: Path) -> None:
    directory = tmp_path / "open"
    directory.mkdir()
    directory.chmod(0o777)
    result = subprocess.run(
        [sys.executable, "-m", "portlease", "ls"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PORTLEASE_DIR": str(directory)},
    )
    assert result.returncode == 1
    assert "world-writable" in one_error_line(result)
