"""How a login's child process is started: the two start methods, behind one interface.

The supervisor (``runner._parent._supervisor``, through
``runner._parent._child_lifetime.start_child``) decides when a child starts and stops; a
launcher only starts it, handing over the leased listening socket and the child's end of
the channel (and, forked by the zygote, its stderr). Nothing is bound again and nothing else
is inherited.

- ``"zygote"`` (default on Linux): ``runner._child._zygote`` imports the SDK once and forks a
  child per login; starting one costs milliseconds instead of a fresh interpreter's
  second or more (``scripts/bench_spawn.py``).
- ``"spawn"`` (default elsewhere): ``python -m runner._child._login``, a fresh interpreter per
  login, with the descriptors in ``pass_fds``.

Never ``fork`` of the parent itself: it runs an event loop and threads. POSIX only:
Windows has no ``pass_fds``; it would hand the socket over with ``socket.share()``.

Both give a ``ChildProcess``: ``pid``, ``returncode``, ``stderr``, ``wait()``,
``terminate()``, ``kill()``. Every child runs in its own session (a terminal's Ctrl-C
reaches only the parent). A zygote lives exactly as long as its ``open_launcher`` block;
at the block's end it is stopped and waited for. ``open_lazy_launcher`` opens that block
only when a first child is started (a call whose logins are all answered from the store
starts no process at all), in a task of its own block's task group, and ends it with the
block.

The parent talks to a zygote over one ``SOCK_SEQPACKET`` socket pair in the versioned
messages of ``runner._core._zygote_protocol`` (both ends import it). A zygote that sends a packet
that does not decode, or a fact that makes no sense, is treated like a dead one: starts
fail with ``LauncherError``, and its children are watched and signalled without it.
A forked child does not depend on its zygote being scheduled: see ``_ForkedChild``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import select
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Final, Literal, Protocol

import anyio
import anyio.abc
import psutil

from runner._core import _zygote_protocol as zp
from runner.errors import LauncherError

__all__ = [
    "ChildProcess",
    "Launcher",
    "LazyLauncher",
    "StartMethod",
    "check_start_method",
    "default_start_method",
    "open_launcher",
    "open_lazy_launcher",
]

StartMethod = Literal["zygote", "spawn"]

_ZYGOTE_STOP_GRACE: Final = 2.0
_EXIT_POLL: Final = 0.05  # how often a waiter looks for an exit nobody reported
_REPORT_GRACE: Final = 0.5  # how long an observed exit waits for the zygote's exact code
_STAT_EXIT_CODE: Final = 49  # /proc/PID/stat field 52 (exit_code), counted after "comm"


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


def check_start_method(method: StartMethod | None) -> StartMethod:
    """``method``, or the default start method for None.

    Raises:
        ValueError: ``method`` is not a start method.
    """
    method = method or default_start_method()
    if method not in ("zygote", "spawn"):
        raise ValueError(f"start_method must be 'zygote' or 'spawn', not {method!r}")
    return method


class LazyLauncher:
    """A launcher that opens the real one (``open_launcher``) at its first ``start``.

    The real launcher's block runs in a task of the owner's task group
    (``open_lazy_launcher``) and ends when the owner's block ends; until a first start,
    nothing is started. A zygote that has died (killed, or broke the protocol) is replaced
    at the next start: its block ends (it is waited for) and a new one opens, so a
    long-lived owner (``runner.Runner``) outlives its zygotes. A launcher that could not be
    opened at all fails every later start the same way (``LauncherError``), without trying
    again: whatever stopped it (no executable, no memory) is not transient.
    """

    def __init__(self, method: StartMethod, owner: anyio.abc.TaskGroup) -> None:
        self.method: StartMethod = method
        self._owner = owner
        self._opening = anyio.Lock()
        self._launcher: Launcher | None = None
        self._retire: anyio.Event | None = None  # set: the current launcher's block ends
        self._failure: str | None = None
        self._closed = False
        self.opened_count = 0
        """How many real launchers were opened (zygotes started, for ``"zygote"``)."""

    @property
    def opened(self) -> bool:
        """Whether a real launcher is open (a zygote started, for ``"zygote"``)."""
        return self._launcher is not None

    async def start(self, listener: socket.socket, channel: socket.socket) -> ChildProcess:
        launcher = await self._open()
        return await launcher.start(listener, channel)

    async def warm_up(self) -> None:
        """Open the real launcher now (a zygote: until it is ready), not at the first start.

        Raises:
            LauncherError: It could not be opened, or the zygote died before it was ready.
        """
        launcher = await self._open()
        if isinstance(launcher, Zygote):
            await launcher.ready()
            if not launcher.alive:  # died before it was ready: the next start replaces it
                raise launcher._unavailable()

    async def _open(self) -> Launcher:
        async with self._opening:
            if isinstance(self._launcher, Zygote) and not self._launcher.alive:
                self._retire_current()  # dead: its block ends; a new zygote opens below
            if self._launcher is not None:
                return self._launcher
            if self._failure is not None:
                raise LauncherError(self._failure)
            if self._closed:
                raise LauncherError("the launcher is closed")
            retire = anyio.Event()
            try:
                launcher: Launcher = await self._owner.start(self._keep_open, retire)
            except Exception as exc:
                self._failure = f"the launcher could not be opened: {type(exc).__name__}: {exc}"
                raise LauncherError(self._failure) from exc
            self._launcher, self._retire = launcher, retire
            self.opened_count += 1
            return launcher

    async def _keep_open(
        self,
        retire: anyio.Event,
        *,
        task_status: anyio.abc.TaskStatus[Launcher] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        async with open_launcher(self.method) as launcher:
            task_status.started(launcher)
            await retire.wait()

    def _retire_current(self) -> None:
        if self._retire is not None:
            self._retire.set()
        self._launcher = self._retire = None

    def close(self) -> None:
        """End the real launcher's block (the owner's task group waits for it)."""
        self._closed = True
        self._retire_current()


@contextlib.asynccontextmanager
async def open_lazy_launcher(method: StartMethod | None = None) -> AsyncIterator[LazyLauncher]:
    """A ``LazyLauncher`` for the duration of the block; at its end the real launcher, if
    one is open, is stopped and waited for (a zygote: as at ``open_launcher``'s end).

    Raises:
        ValueError: ``method`` is not a start method (at once, before anything starts).
    """
    checked = check_start_method(method)
    async with anyio.create_task_group() as owner:
        lazy = LazyLauncher(checked, owner)
        try:
            yield lazy
        finally:
            lazy.close()


#: The directory that holds the ``runner`` package (this file is runner/_parent/_launch.py).
_SOURCE_ROOT: Final = Path(__file__).resolve().parents[2]


def _child_env() -> dict[str, str]:
    """The environment, with this package importable even from a source checkout."""
    root = str(_SOURCE_ROOT)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


class SpawnLauncher:
    """A fresh interpreter per login: ``python -m runner._child._login``."""

    method: StartMethod = "spawn"

    async def start(self, listener: socket.socket, channel: socket.socket) -> ChildProcess:
        return await anyio.open_process(
            [
                sys.executable,
                "-m",
                "runner._child._login",
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
    """A child forked by the zygote, signalled and watched by the parent directly.

    The zygote reaps it and reports its exit, but a zygote may stop reporting: dead (the
    child is then an orphan, reaped by init) or stopped (``SIGSTOP``: it reads nothing,
    reaps nothing, reports nothing). Nothing here depends on the zygote being scheduled:

    - ``wait()`` returns on the zygote's ``Exited`` report (the exact code) or on seeing
      the child exit by itself, polling every ``_EXIT_POLL`` (no event exists for another
      process's child). An exit seen first takes its code from the zombie's
      ``/proc/PID/stat``, else waits ``_REPORT_GRACE`` for the report, else is -1 (lost).
    - ``terminate()``/``kill()`` go straight to the child through a pidfd, so they reach
      it even when the zygote is stopped or gone. A pidfd names one process for good: it
      never reaches a process that later gets the same pid number. The pidfd is opened
      when the zygote reports the fork, and checked (see ``_open_pidfd``). Without pidfd
      support (not Linux, or a kernel before 5.3) the signal goes through the zygote,
      which signals only children it has not reaped; if the zygote is gone or stopped,
      straight to the pid (a stopped zygote cannot reap, so the pid is still the child's).
    - once the exit is known the child is never signalled again, and the pidfd is closed.
    """

    def __init__(self, zygote: Zygote, pid: int, pidfd: int | None) -> None:
        self._zygote = zygote
        self._pid = pid
        self._pidfd = pidfd
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
            self._close_pidfd()
            self._exited.set()

    def _close_pidfd(self) -> None:
        # Only ever called from the event loop's thread, between awaits: no poll of this
        # descriptor is in progress, and ``None`` is what every later user sees.
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    async def wait(self) -> int:
        if self._returncode is None:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watch)
                await self._exited.wait()
                tg.cancel_scope.cancel()
        assert self._returncode is not None
        return self._returncode

    async def _watch(self) -> None:
        """Wait for the exit by looking, for when the zygote does not report it."""
        while not self._has_exited():
            await anyio.sleep(_EXIT_POLL)
        code = self._zombie_exit_code()
        if code is None and self._zygote.alive:
            # Reaped already (by a running zygote, whose report is then on its way), or
            # no /proc: the report has the exact code, so give it a moment.
            with anyio.move_on_after(_REPORT_GRACE):
                await self._exited.wait()
        self._exit(-1 if code is None else code)

    def _has_exited(self) -> bool:
        if self._returncode is not None:
            return True
        if self._pidfd is not None:
            # A pidfd is readable once its process has exited (zombie or reaped).
            poller = select.poll()
            poller.register(self._pidfd, select.POLLIN)
            return bool(poller.poll(0))
        # By pid: a zombie counts as exited. A recycled pid can only delay this (the
        # zygote reaped the child, so its report is coming), never signal anything.
        return not _running(self._pid)

    def _zombie_exit_code(self) -> int | None:
        """The code of our exited, unreaped child, or None. Read by pid, then confirmed
        through the pidfd: still unreaped after the read means the pid was ours during it."""
        if self._pidfd is None:
            return None
        try:
            with open(f"/proc/{self._pid}/stat", "rb") as stat_file:
                stat = stat_file.read()
            fields = stat[stat.rindex(b")") + 2 :].split()
            if fields[0] != b"Z":
                return None
            status = int(fields[_STAT_EXIT_CODE])
            _pidfd_signal(self._pidfd, 0)  # ProcessLookupError: reaped meanwhile
            return os.waitstatus_to_exitcode(status)
        except (OSError, ValueError, IndexError):
            return None

    def _signal(self, signum: int) -> None:
        if self._returncode is not None:
            return  # its pid may belong to another process by now
        if self._pidfd is not None:
            with contextlib.suppress(ProcessLookupError):  # exited, not yet reported
                _pidfd_signal(self._pidfd, signum)
            return
        self._zygote.signal(self, signum)

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _stopped(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP)
    except psutil.NoSuchProcess:
        return False


def _pidfd_signal(pidfd: int, signum: int) -> None:
    if sys.platform == "linux":
        signal.pidfd_send_signal(pidfd, signum)
    else:  # _open_pidfd never returns a pidfd elsewhere
        raise ProcessLookupError(signum)


def _open_pidfd(pid: int, zygote_pid: int) -> int | None:
    """A pidfd for the zygote's child ``pid``, or None (no pidfd support, or it is gone).

    A pidfd is opened by pid number, so it is checked after opening: that process must be
    a child of the zygote, and still unreaped after that check (signal 0 through the
    pidfd). Then the pid was that child's all along, and the pidfd is the child's for
    good. A child the zygote had already reaped (its ``Exited`` still queued behind the
    ``Forked`` being handled) fails the check and gets no pidfd."""
    if sys.platform != "linux":
        return None
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:  # ENOSYS (kernel before 5.3), ESRCH (gone)
        return None
    try:
        ours = psutil.Process(pid).ppid() == zygote_pid
        signal.pidfd_send_signal(pidfd, 0)
    except (OSError, psutil.Error):
        ours = False
    if not ours:
        os.close(pidfd)
        return None
    return pidfd


class Zygote:
    """The parent's handle on a ``runner._child._zygote`` process. Use ``Zygote.open()``."""

    method: StartMethod = "zygote"

    def __init__(self, process: anyio.abc.Process, control: socket.socket) -> None:
        self._process = process
        self._control = control
        self._ids = itertools.count()
        self._ready = anyio.Event()
        # request id -> (answered, [the child, or the zygote's reason for refusing])
        self._pending: dict[int, tuple[anyio.Event, list[_ForkedChild | str | None]]] = {}
        self._children: dict[int, _ForkedChild] = {}
        self._broken: str | None = None
        self.alive = True

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls) -> AsyncIterator[Zygote]:
        async with cls._run([sys.executable, "-m", "runner._child._zygote"]) as zygote:
            yield zygote

    @classmethod
    @contextlib.asynccontextmanager
    async def _run(cls, command: Sequence[str]) -> AsyncIterator[Zygote]:
        """Run ``command --control-fd N`` as the zygote (tests run impostors here)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            process = await anyio.open_process(
                [*command, "--control-fd", str(theirs.fileno())],
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
            for child in zygote._children.values():
                child._close_pidfd()  # exits never reported; waiters poll by pid now

    async def _stop(self) -> None:
        with contextlib.suppress(OSError):
            self._control.shutdown(socket.SHUT_WR)  # end of stream: the zygote winds down
        with anyio.move_on_after(_ZYGOTE_STOP_GRACE):
            await self._process.wait()
            return
        with contextlib.suppress(ProcessLookupError):
            self._process.kill()
        await self._process.wait()

    async def ready(self) -> None:
        """Return once the zygote has said ``Ready`` (or has died: see ``alive``)."""
        await self._ready.wait()

    def _unavailable(self) -> LauncherError:
        if self._broken is not None:
            return LauncherError(f"the zygote broke the control protocol: {self._broken}")
        return LauncherError("the zygote process has exited")

    async def start(self, listener: socket.socket, channel: socket.socket) -> ChildProcess:
        await self._ready.wait()
        if not self.alive:
            raise self._unavailable()
        request_id = next(self._ids)
        done = anyio.Event()
        slot: list[_ForkedChild | str | None] = [None]
        self._pending[request_id] = (done, slot)
        stderr_ours, stderr_theirs = socket.socketpair()
        try:
            payload = zp.encode(zp.Fork(id=request_id))
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
        if not isinstance(child, _ForkedChild):
            stderr_ours.close()
            if child is None:
                raise self._unavailable()
            raise LauncherError(f"the zygote could not start the login's child: {child}")
        child._stderr = await anyio.abc.SocketStream.from_socket(stderr_ours)
        return child

    def signal(self, child: _ForkedChild, signum: int) -> None:
        """Signal ``child`` through the zygote (for children without a pidfd)."""
        if child.returncode is not None:
            return
        if self.alive and not _stopped(self._process.pid):
            with contextlib.suppress(BlockingIOError):
                self._control.send(zp.encode(zp.Signal(pid=child.pid, sig=int(signum))))
                return
        # The zygote is gone, stopped or not reading (its queue is full): signal directly.
        # A stopped zygote cannot reap, so the pid is still the child's.
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signum)

    async def _read(self) -> None:
        try:
            while True:
                await anyio.wait_readable(self._control)
                try:
                    # One byte over the limit, so that an oversized packet is seen as such.
                    data = self._control.recv(zp.MAX_PACKET_BYTES + 1)
                except BlockingIOError:
                    continue
                if not data:
                    return
                self._dispatch(zp.decode(data))
        except zp.ZygoteProtocolError as exc:
            # A zygote that breaks the protocol is treated exactly like a dead one: nothing
            # it says can be trusted any more, so nothing may keep waiting for it. Pending
            # and later starts fail with LauncherError; its children are watched and
            # signalled without it (see _ForkedChild). Open's block end still stops it.
            self._broken = str(exc)
        except OSError:
            pass  # the zygote died: the same as end of stream
        finally:
            self.alive = False
            self._ready.set()
            for done, _slot in self._pending.values():
                done.set()
            self._pending.clear()

    def _dispatch(self, fact: zp.ZygoteMessage) -> None:
        if isinstance(fact, zp.Ready):
            self._ready.set()
        elif isinstance(fact, zp.Forked | zp.Refused):
            if fact.id is None:
                raise zp.ZygoteProtocolError(f"the zygote could not read a command: {fact.reason}")
            done, slot = self._pending.pop(fact.id, (None, None))
            if isinstance(fact, zp.Forked):
                if fact.pid in self._children:
                    raise zp.ZygoteProtocolError(f"pid {fact.pid} reported forked twice")
                child = _ForkedChild(self, fact.pid, _open_pidfd(fact.pid, self._process.pid))
                self._children[child.pid] = child
                if slot is not None:
                    slot[0] = child
            elif slot is not None:
                slot[0] = fact.reason
            if done is not None:
                done.set()
        elif isinstance(fact, zp.Exited):
            exited = self._children.pop(fact.pid, None)
            if exited is not None:
                exited._exit(fact.code)
        else:
            raise zp.ZygoteProtocolError(f"{type(fact).__name__} is a command, not a fact")
