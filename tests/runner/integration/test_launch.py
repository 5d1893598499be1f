"""The two start methods: a child per login, its exit seen, its signals delivered."""

from __future__ import annotations

import functools
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import psutil
import pytest

from portlease import Registry
from runner._core import _zygote_protocol as zp
from runner._core._messages import LoginFailed, StartLogin
from runner._io._channel import Channel
from runner._parent._child_lifetime import start_child
from runner._parent._launch import (
    ChildProcess,
    Launcher,
    LauncherError,
    Zygote,
    open_launcher,
    open_lazy_launcher,
)

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def a_child(
    launcher: Launcher, tmp_path: Path, server_url: str
) -> AsyncIterator[tuple[ChildProcess, Channel]]:
    """A real login child, started and ready; stopped, and its lease released, afterwards."""
    with Registry(tmp_path / "leases").acquire(owner="test") as lease:
        first = functools.partial(
            StartLogin,
            name="t",
            server_url=server_url,
            redirect_host=lease.host,
            redirect_port=lease.port,
            callback_path="/callback",
            scope=None,
            client_id=None,
            client_secret=None,
            client_name="t",
            time_left=30,
            configured_timeout=30,
            interactive=True,
        )
        async with start_child(launcher, lease.socket, first) as child:
            yield child.process, child.channel


@pytest.fixture
def silent_server() -> socket.socket:
    """A server that accepts connections into its backlog and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


@pytest.mark.parametrize("method", ["zygote", "spawn"])
async def test_a_child_reports_and_exits(method: str, tmp_path: Path) -> None:
    async with open_launcher(method) as launcher:  # type: ignore[arg-type]
        assert launcher.method == method
        # Port 9 on loopback refuses: the login fails at once, and the child says so.
        async with a_child(launcher, tmp_path, "http://127.0.0.1:9/mcp") as (child, channel):
            message = await channel.receive()
            assert isinstance(message, LoginFailed)
            assert message.kind == "ServerUnreachable"  # refused: nothing was there
            with anyio.fail_after(10):
                assert await child.wait() == 0


@pytest.mark.parametrize("method", ["zygote", "spawn"])
async def test_kill_is_delivered_and_seen(
    method: str, tmp_path: Path, silent_server: socket.socket
) -> None:
    url = f"http://127.0.0.1:{silent_server.getsockname()[1]}/mcp"
    with silent_server:
        async with (
            open_launcher(method) as launcher,  # type: ignore[arg-type]
            a_child(launcher, tmp_path, url) as (child, _channel),
        ):
            assert psutil.pid_exists(child.pid)
            child.kill()
            with anyio.fail_after(10):
                assert await child.wait() == -signal.SIGKILL
            assert not psutil.pid_exists(child.pid)


async def test_the_zygote_is_gone_after_its_block(tmp_path: Path) -> None:
    async with open_launcher("zygote") as launcher:
        assert isinstance(launcher, Zygote)
        zygote_pid = launcher._process.pid
        async with a_child(launcher, tmp_path, "http://127.0.0.1:9/mcp") as (child, _):
            await child.wait()
    assert not psutil.pid_exists(zygote_pid)


async def test_a_dead_zygote_leaves_its_children_killable(
    tmp_path: Path, silent_server: socket.socket
) -> None:
    url = f"http://127.0.0.1:{silent_server.getsockname()[1]}/mcp"
    with silent_server:
        async with open_launcher("zygote") as launcher:
            assert isinstance(launcher, Zygote)
            async with a_child(launcher, tmp_path, url) as (child, _channel):
                os.kill(launcher._process.pid, signal.SIGKILL)
                await launcher._process.wait()
                with anyio.fail_after(5):
                    while launcher.alive:
                        await anyio.sleep(0.01)  # the reader notices end of stream
                child.kill()
                with anyio.fail_after(5):
                    await child.wait()
                assert not psutil.pid_exists(child.pid) or (
                    psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE
                )


async def until(condition: Callable[[], bool]) -> None:
    """Poll another process's state, for which no event exists (the caller bounds it)."""
    while not condition():
        await anyio.sleep(0.01)


def stopped(pid: int) -> bool:
    return psutil.Process(pid).status() == psutil.STATUS_STOPPED


def gone_or_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def test_kill_and_wait_work_while_the_zygote_is_stopped(
    tmp_path: Path, silent_server: socket.socket
) -> None:
    # The zygote and the child both stopped (issue 6, row 7): the zygote reads no Signal
    # and reports no exit, yet the kill must land and the wait must see it.
    url = f"http://127.0.0.1:{silent_server.getsockname()[1]}/mcp"
    with silent_server:
        async with open_launcher("zygote") as launcher:
            assert isinstance(launcher, Zygote)
            zygote_pid = launcher._process.pid
            async with a_child(launcher, tmp_path, url) as (child, _channel):
                child_pid = child.pid
                os.kill(zygote_pid, signal.SIGSTOP)
                try:
                    os.kill(child_pid, signal.SIGSTOP)
                    with anyio.fail_after(5):
                        await until(lambda: stopped(zygote_pid) and stopped(child_pid))
                    child.kill()
                    with anyio.fail_after(5):
                        code = await child.wait()
                    assert code == -signal.SIGKILL  # read from the zombie: nobody reaped it
                    assert gone_or_zombie(child_pid)
                    assert stopped(zygote_pid)  # it really never got to help
                    child.kill()  # known exited: a no-op, never a signal to a reused pid
                finally:
                    os.kill(zygote_pid, signal.SIGCONT)  # so it can reap and exit
    assert not psutil.pid_exists(zygote_pid)
    assert not psutil.pid_exists(child_pid)


async def test_terminate_reaches_the_child_while_the_zygote_is_stopped(
    tmp_path: Path, silent_server: socket.socket
) -> None:
    url = f"http://127.0.0.1:{silent_server.getsockname()[1]}/mcp"
    with silent_server:
        async with open_launcher("zygote") as launcher:
            assert isinstance(launcher, Zygote)
            zygote_pid = launcher._process.pid
            async with a_child(launcher, tmp_path, url) as (child, _channel):
                os.kill(zygote_pid, signal.SIGSTOP)
                try:
                    with anyio.fail_after(5):
                        await until(lambda: stopped(zygote_pid))
                    child.terminate()
                    with anyio.fail_after(10):
                        await child.wait()
                    assert gone_or_zombie(child.pid)
                finally:
                    os.kill(zygote_pid, signal.SIGCONT)
    assert not psutil.pid_exists(zygote_pid)


# An impostor zygote: it says Ready (or not), answers the first packet with `reply`, then
# waits for end of stream, like the real one. `reply` is what a broken zygote might send.
IMPOSTOR = """
import socket, sys
control = socket.socket(fileno=int(sys.argv[-1]))
ready, reply = bytes.fromhex(sys.argv[1]), bytes.fromhex(sys.argv[2])
if ready:
    control.send(ready)
data, fds, _, _ = socket.recv_fds(control, 65536, 4)
control.send(reply)
while control.recv(65536):
    pass
"""
READY = zp.encode(zp.Ready())
BROKEN_REPLIES = {
    "forked without a pid": (READY, b'{"v":1,"op":"forked","id":0}'),
    "forked with pid true (int(True) is init)": (
        READY,
        b'{"v":1,"op":"forked","id":0,"pid":true}',
    ),
    "not an object": (READY, b"[]"),
    "exited with a str pid": (READY, b'{"v":1,"op":"exited","pid":"1","code":0}'),
    "another version": (READY, b'{"v":99,"op":"forked","id":0,"pid":4242}'),
    "unversioned": (READY, b'{"op":"forked","id":0,"pid":4242}'),
    "a command back": (READY, zp.encode(zp.Signal(pid=4242, sig=9))),
    "could not read our command": (READY, zp.encode(zp.Refused(id=None, reason="?"))),
    "a ready of another version": (b'{"v":99,"op":"ready"}', b"{}"),
}


@pytest.mark.parametrize(("ready", "reply"), BROKEN_REPLIES.values(), ids=BROKEN_REPLIES.keys())
async def test_a_zygote_that_breaks_the_protocol_fails_the_start(
    ready: bytes, reply: bytes, tmp_path: Path
) -> None:
    command = [sys.executable, "-c", IMPOSTOR, ready.hex(), reply.hex()]
    with Registry(tmp_path / "leases").acquire(owner="test") as lease:
        ours, theirs = socket.socketpair()
        with ours, theirs:
            async with Zygote._run(command) as zygote:
                impostor_pid = zygote._process.pid
                with anyio.fail_after(5), pytest.raises(LauncherError):
                    await zygote.start(lease.socket, theirs)
                assert not zygote.alive
                with anyio.fail_after(5), pytest.raises(LauncherError):
                    await zygote.start(lease.socket, theirs)  # and stays failed
    assert not psutil.pid_exists(impostor_pid)


async def test_a_refused_fork_is_a_launcher_error_and_the_zygote_goes_on(tmp_path: Path) -> None:
    refused = zp.encode(zp.Refused(id=0, reason="fork: Resource temporarily unavailable"))
    command = [sys.executable, "-c", IMPOSTOR, READY.hex(), refused.hex()]
    with Registry(tmp_path / "leases").acquire(owner="test") as lease:
        ours, theirs = socket.socketpair()
        with ours, theirs:
            async with Zygote._run(command) as zygote:
                with anyio.fail_after(5), pytest.raises(LauncherError, match="temporarily"):
                    await zygote.start(lease.socket, theirs)
                assert zygote.alive


async def test_a_zygote_dead_before_ready_fails_warm_up_and_the_next_one_replaces_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    opened: list[int] = []
    real_open = Zygote.open

    @asynccontextmanager
    async def first_dies_then_real() -> AsyncIterator[Zygote]:
        opened.append(len(opened))
        if len(opened) == 1:  # an impostor that exits without a word
            async with Zygote._run([sys.executable, "-c", "raise SystemExit(3)"]) as zygote:
                yield zygote
        else:
            async with real_open() as zygote:
                yield zygote

    monkeypatch.setattr(Zygote, "open", first_dies_then_real)
    async with open_lazy_launcher("zygote") as launcher:
        with anyio.fail_after(10), pytest.raises(LauncherError, match="exited"):
            await launcher.warm_up()
        with anyio.fail_after(30):
            await launcher.warm_up()
        assert launcher.opened_count == 2 and launcher.opened
