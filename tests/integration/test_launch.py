"""The two start methods: a child per login, its exit seen, its signals delivered."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import psutil
import pytest

from portlease import Registry
from runner.channel import Channel
from runner.launch import ChildProcess, Launcher, Zygote, open_launcher
from runner.messages import LoginFailed, ServerReady, StartLogin

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def a_child(
    launcher: Launcher, tmp_path: Path, server_url: str
) -> AsyncIterator[tuple[ChildProcess, Channel]]:
    """A real login child, started and ready; its lease is released afterwards."""
    with Registry(tmp_path / "leases").acquire(owner="test") as lease:
        ours, theirs = socket.socketpair()
        try:
            child = await launcher.start(lease.socket, theirs)
        finally:
            theirs.close()
        channel = await Channel.from_socket(ours)
        try:
            await channel.send(
                StartLogin(
                    name="t",
                    server_url=server_url,
                    redirect_uri=lease.url("/callback"),
                    scope=None,
                    client_id=None,
                    client_secret=None,
                    client_name="t",
                    timeout=30,
                    limit=30,
                    interactive=True,
                )
            )
            assert isinstance(await channel.receive(), ServerReady)
            yield child, channel
        finally:
            with anyio.CancelScope(shield=True):
                if child.returncode is None:
                    child.kill()
                    await child.wait()
                if child.stderr is not None:
                    await child.stderr.aclose()
                await channel.aclose()


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
            assert message.kind == "OAuthProtocolError"
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
