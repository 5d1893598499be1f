"""How a login's child process is started: the two start methods, behind one interface.

The supervisor (``runner.flows``) decides when a child starts and stops; a launcher only
starts it, handing over exactly two descriptors: the leased listening socket and the
child's end of the channel. Nothing is bound again and nothing else is inherited.

- ``"zygote"`` (default on Linux): ``runner.zygote`` imports the SDK once and forks a
  child per login; starting one costs milliseconds instead of a fresh interpreter's
  second or more (``scripts/bench_spawn.py``).
- ``"spawn"`` (default elsewhere): ``python -m runner.child``, a fresh interpreter per
  login, with the descriptors in ``pass_fds``.

Never ``fork`` of the parent itself: it runs an event loop and threads. POSIX only:
Windows has no ``pass_fds``; it would hand the socket over with ``socket.share()``.

Both give a ``ChildProcess``: ``pid``, ``returncode``, ``stderr``, ``wait()``,
``terminate()``, ``kill()``. Every child runs in its own session (a terminal's Ctrl-C
reaches only the parent). A zygote lives exactly as long as its ``open_launcher`` block;
at the block's end it is stopped and waited for.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final, Literal, Protocol

import anyio
import anyio.abc
import psutil

__all__ = ["ChildProcess", "Launcher", "StartMethod", "default_start_method", "open_launcher"]

StartMethod = Literal["zygote", "spawn"]

_ZYGOTE_STOP_GRACE: Final = 2.0
_ORPHAN_POLL: Final = 0.05


class ChildProcess(Protocol):
    """What the supervisor needs of a running child."""

    @property
    def pid(self) -> int: ...
    @property
    def returncode(self) -> int | None: ...
    @property
    def stderr(self) -> anyio.abc.ByteReceiveStream | None: ...
    async def wait(self) -> int: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...


class Launcher(Protocol):
    method: StartMethod

    async def start(self, listener: socket.socket, channel: socket.socket) -> ChildProcess:
        """Start a child serving ``listener`` and talking over ``channel``. The caller
        keeps (and later closes) its own copies of both."""
        ...


class LauncherError(RuntimeError):
    """A child could not be started (the zygote died or refused)."""


def default_start_method() -> StartMethod:
    return "zygote" if sys.platform.startswith("linux") else "spawn"


@contextlib.asynccontextmanager
async def open_launcher(method: StartMethod | None = None) -> AsyncIterator[Launcher]:
    """A launcher for the duration of the block (a zygote is stopped at its end)."""
    method = method or default_start_method()
    if method == "spawn":
        yield SpawnLauncher()
    elif method == "zygote":
        async with Zygote.open() as zygote:
            yield zygote
    else:
        raise ValueError(f"start_method must be 'zygote' or 'spawn', not {method!r}")


def _child_env() -> dict[str, str]:
    """The environment, with this package importable even from a source checkout."""
    import runner

    root = str(Path(runner.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


class SpawnLauncher:
    """A fresh interpreter per login: ``python -m runner.child``."""

    method: StartMethod = "spawn"

    async def start(self, listener: socket.socket, channel: socket.socket) -> ChildProcess:
        return await anyio.open_process(
            [
                sys.executable,
                "-m",
                "runner.child",
                "--listen-fd",
                str(listener.fileno()),
                "--channel-fd",
                str(channel.fileno()),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            pass_fds=(listener.fileno(), channel.fileno()),
            start_new_session=True,
            env=_child_env(),
        )


class _ForkedChild:
    """A child forked by the zygote: signalled and reaped through it."""

    def __init__(self, zygote: Zygote, pid: int) -> None:
        self._zygote = zygote
        self._pid = pid
        self._returncode: int | None = None
        self._exited = anyio.Event()
        self._stderr: anyio.abc.ByteReceiveStream | None = None

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def returncode(self) -> int | None:
        return self._returncode

    @property
    def stderr(self) -> anyio.abc.ByteReceiveStream | None:
        return self._stderr

    def _exit(self, code: int) -> None:
        if self._returncode is None:
            self._returncode = code
            self._exited.set()

    async def wait(self) -> int:
        await self._exited.wait()  # set when the zygote reports the exit, or dies
        while self._returncode is None:
            # The zygote died before reaping us: nobody can wait(2) for this pid any
            # more, so watch it go; its exit code is lost (-1).
            if _running(self._pid):
                await anyio.sleep(_ORPHAN_POLL)
            else:
                self._returncode = -1
        return self._returncode

    def terminate(self) -> None:
        self._zygote.signal(self, signal.SIGTERM)

    def kill(self) -> None:
        self._zygote.signal(self, signal.SIGKILL)


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class Zygote:
    """The parent's handle on a ``runner.zygote`` process. Use ``Zygote.open()``."""

    method: StartMethod = "zygote"

    def __init__(self, process: anyio.abc.Process, control: socket.socket) -> None:
        self._process = process
        self._control = control
        self._ids = itertools.count()
        self._ready = anyio.Event()
        self._pending: dict[int, tuple[anyio.Event, list[_ForkedChild | None]]] = {}
        self._children: dict[int, _ForkedChild] = {}
        self.alive = True

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls) -> AsyncIterator[Zygote]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            process = await anyio.open_process(
                [sys.executable, "-m", "runner.zygote", "--control-fd", str(theirs.fileno())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=None,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,
                env=_child_env(),
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        zygote = cls(process, ours)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(zygote._read)
                try:
                    yield zygote
                finally:
                    with anyio.CancelScope(shield=True):
                        await zygote._stop()
                    tg.cancel_scope.cancel()
        finally:
            ours.close()

    async def _stop(self) -> None:
        with contextlib.suppress(OSError):
            self._control.shutdown(socket.SHUT_WR)  # end of stream: the zygote winds down
        with anyio.move_on_after(_ZYGOTE_STOP_GRACE):
            await self._process.wait()
            return
        with contextlib.suppress(ProcessLookupError):
            self._process.kill()
        await self._process.wait()

    async def start(self, listener: socket.socket, channel: socket.socket) -> ChildProcess:
        await self._ready.wait()
        if not self.alive:
            raise LauncherError("the zygote process has exited")
        request_id = next(self._ids)
        done = anyio.Event()
        slot: list[_ForkedChild | None] = [None]
        self._pending[request_id] = (done, slot)
        stderr_ours, stderr_theirs = socket.socketpair()
        try:
            payload = json.dumps({"op": "fork", "id": request_id}).encode()
            fds = [listener.fileno(), channel.fileno(), stderr_theirs.fileno()]
            while True:
                try:
                    socket.send_fds(self._control, [payload], fds)
                    break
                except BlockingIOError:
                    await anyio.wait_writable(self._control)
        except BaseException:
            stderr_ours.close()
            self._pending.pop(request_id, None)
            raise
        finally:
            stderr_theirs.close()
        try:
            await done.wait()
        except BaseException:
            stderr_ours.close()
            raise
        child = slot[0]
        if child is None:
            stderr_ours.close()
            raise LauncherError("the zygote could not start the login's child")
        child._stderr = await anyio.abc.SocketStream.from_socket(stderr_ours)
        return child

    def signal(self, child: _ForkedChild, signum: int) -> None:
        if child.returncode is not None:
            return
        if self.alive:
            payload = json.dumps({"op": "signal", "pid": child.pid, "sig": int(signum)})
            with contextlib.suppress(BlockingIOError):
                self._control.send(payload.encode())
                return
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signum)  # zygote gone (or its queue full): signal directly

    async def _read(self) -> None:
        try:
            while True:
                await anyio.wait_readable(self._control)
                try:
                    data = self._control.recv(65536)
                except BlockingIOError:
                    continue
                if not data:
                    return
                self._dispatch(json.loads(data))
        except (OSError, ValueError):
            pass
        finally:
            self.alive = False
            self._ready.set()
            for done, _slot in self._pending.values():
                done.set()
            self._pending.clear()
            for child in self._children.values():
                if child.returncode is None:
                    child._exited.set()  # wake waiters; wait() falls back to polling

    def _dispatch(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == "ready":
            self._ready.set()
        elif op in ("forked", "refused"):
            done, slot = self._pending.pop(message["id"], (None, None))
            if op == "forked":
                child = _ForkedChild(self, int(message["pid"]))
                self._children[child.pid] = child
                if slot is not None:
                    slot[0] = child
            if done is not None:
                done.set()
        elif op == "exited":
            exited = self._children.pop(int(message["pid"]), None)
            if exited is not None:
                exited._exit(int(message["code"]))
