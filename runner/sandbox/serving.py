"""Running the servers: their loopback sockets, and one event loop in one daemon thread.

:class:`Slot` is one server before and while it runs (its socket, settings, behaviour and,
once the loop has built it, its provider); :class:`SandboxServer` is what a caller sees of
it. :class:`ServerLoop` runs every slot's app under uvicorn on one event loop in one
background thread, and stops them.

Invariants:
    - Every server listens on a socket the sandbox binds itself (:func:`bind_loopback`:
      127.0.0.1, port 0, listening before any URL names it) and hands to uvicorn: no port
      race, no fixed port. The sockets are not inheritable, so child processes never hold
      them.
    - All servers run on one event loop in one daemon thread. The caller's thread and loop
      are never used: a sandbox works from synchronous code and from inside a running event
      loop. uvicorn installs signal handlers only on the main thread, so the host keeps its
      SIGINT handler.
    - :meth:`ServerLoop.start` returns once every server accepts connections, or raises;
      nothing raised in the thread escapes it: the first failure is kept and reported.
    - :meth:`ServerLoop.stop` sets the ``stopping`` event, which releases what the knobs hold
      back, ends the MCP sessions (and so their open event streams) and then uvicorn, so a
      stop is bounded; it works from any thread, and before the loop exists.
    - The loop thread owns the providers, apps and uvicorn servers; the caller's thread
      touches only the thread-safe events, the loop's ``call_soon_threadsafe`` (also
      through :meth:`ServerLoop.call`), and the provider's locked copies:
      :meth:`Provider.issued`, :meth:`Provider.grant_counts`,
      :meth:`Provider.refresh_presentations` and :meth:`Provider.authorized_client_ids`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import uvicorn
from mcp.server.auth.settings import AuthSettings
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

from runner.sandbox.app import build_app
from runner.sandbox.behaviour import Behaviour
from runner.sandbox.errors import SandboxError
from runner.sandbox.provider import Provider
from runner.sandbox.settings import HOST

__all__ = ["SandboxServer", "ServerLoop", "Slot", "bind_loopback"]

_BACKLOG: Final = 128
_GRACEFUL_SHUTDOWN: Final = 1  # seconds uvicorn gives open connections at stop


@dataclass(frozen=True, slots=True)
class SandboxServer:
    """One running sandbox server.

    Attributes:
        name: ``sandbox-1``, ``sandbox-2``, ...
        url: The MCP endpoint and protected resource, ``http://127.0.0.1:PORT/mcp``.
        issuer: The authorization server's issuer, ``http://127.0.0.1:PORT`` (no slash).
        port: The listening port.
        behaviour: How its authorization server behaves.
    """

    name: str
    url: str
    issuer: str
    port: int
    behaviour: Behaviour


@dataclass(slots=True)
class Slot:
    """A server before and while it runs: its socket, settings and (once built) provider."""

    name: str
    sock: socket.socket
    port: int
    settings: AuthSettings
    behaviour: Behaviour
    provider: Provider | None = None

    @property
    def public(self) -> SandboxServer:
        assert self.settings.resource_server_url is not None
        return SandboxServer(
            name=self.name,
            url=str(self.settings.resource_server_url),
            issuer=str(self.settings.issuer_url),
            port=self.port,
            behaviour=self.behaviour,
        )


def bind_loopback() -> socket.socket:
    """A TCP socket bound to 127.0.0.1 on a free port and listening (not inheritable)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if sys.platform == "win32":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
        sock.bind((HOST, 0))
        sock.listen(_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


class _Uvicorn(uvicorn.Server):
    """uvicorn's server, reporting readiness and stopping on ``exit_now`` instead of polling."""

    def __init__(self, config: uvicorn.Config, *, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started
        self.exit_now = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._on_started()

    async def main_loop(self) -> None:
        await self.on_tick(0)  # sets the default headers once
        await self.exit_now.wait()


class ServerLoop:
    """Every slot's server on one event loop in one daemon thread (see the module docstring).

    Starts once. The slots' sockets stay the caller's: this class never closes them.

    Args:
        slots: The servers to run, each with its bound, listening socket.
        thread_name: The name of the background thread.
    """

    def __init__(self, slots: Sequence[Slot], *, thread_name: str) -> None:
        self._slots = tuple(slots)
        self._thread_name = thread_name
        self._lock = threading.Lock()
        # Between the caller's thread and the loop thread:
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stop_requested = threading.Event()
        self._error: BaseException | None = None
        self._started_count = 0
        # Loop thread only:
        self._stopping: asyncio.Event | None = None
        self._serving: list[tuple[_Uvicorn, StreamableHTTPSessionManager, socket.socket]] = []

    def start(self, timeout: float) -> None:
        """Start the thread; return once every server accepts connections.

        Raises:
            SandboxError: A server failed to start, or not all did within ``timeout``
                seconds. The caller stops the loop.
        """
        self._thread = threading.Thread(target=self._run, name=self._thread_name, daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise SandboxError(f"the sandbox did not start within {timeout} s")
        if self._error is not None:
            raise SandboxError(
                f"a sandbox server failed to start: {self._error!r}"
            ) from self._error

    def stop(self, timeout: float) -> bool:
        """Ask every server to stop and join the thread for up to ``timeout`` seconds.

        Returns:
            Whether the thread is still alive (it is a daemon thread).
        """
        self._stop_requested.set()
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(self._begin_stop)
        if self._thread is None:
            return False
        self._thread.join(timeout)
        return self._thread.is_alive()

    def call(self, function: Callable[[], None], timeout: float) -> None:
        """Run ``function()`` on the loop thread and wait for it (up to ``timeout`` s).

        Raises:
            SandboxError: The loop is not running, or did not run it in time.
            Exception: whatever ``function`` raised.
        """
        loop = self._loop
        if loop is None or self._stop_requested.is_set():
            raise SandboxError("the sandbox is not running")
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def run() -> None:
            try:
                function()
            except BaseException as exc:
                done.set_exception(exc)
            else:
                done.set_result(None)

        try:
            loop.call_soon_threadsafe(run)
        except RuntimeError:  # the loop has just ended
            raise SandboxError("the sandbox is not running") from None
        try:
            done.result(timeout)
        except concurrent.futures.TimeoutError:
            raise SandboxError(f"the sandbox loop did not answer within {timeout} s") from None

    # -- the loop thread ------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # nothing may escape the thread
            self._fail(exc)
        finally:
            self._ready.set()

    async def _main(self) -> None:
        stopping = asyncio.Event()
        self._stopping = stopping
        self._loop = asyncio.get_running_loop()
        try:
            for slot in self._slots:
                slot.provider = Provider(
                    issuer=str(slot.settings.issuer_url),
                    resource=str(slot.settings.resource_server_url),
                    behaviour=slot.behaviour,
                    stopping=stopping,
                )
                app, sessions = build_app(slot.name, slot.settings, slot.provider, slot.behaviour)
                config = uvicorn.Config(
                    app,
                    http="h11",
                    ws="none",
                    lifespan="off",  # _serve runs the session manager itself
                    log_config=None,
                    log_level="warning",
                    access_log=False,
                    timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN,
                )
                server = _Uvicorn(config, on_started=self._server_started)
                self._serving.append((server, sessions, slot.sock))
        except Exception as exc:
            self._fail(exc)
            return
        if self._stop_requested.is_set():  # stop() may have run before _loop was set
            self._begin_stop()
        await asyncio.gather(
            *(self._serve(server, sessions, sock) for server, sessions, sock in self._serving)
        )

    async def _serve(
        self, server: _Uvicorn, sessions: StreamableHTTPSessionManager, sock: socket.socket
    ) -> None:
        """Serve until the sandbox stops; then end the MCP sessions first, then uvicorn.

        Ending the sessions first ends their open event streams, so uvicorn's graceful
        shutdown finds idle connections instead of waiting its timeout out.
        """
        stopping = self._stopping
        assert stopping is not None
        try:
            async with sessions.run():
                serving = asyncio.create_task(server.serve(sockets=[sock]))
                stopped = asyncio.create_task(stopping.wait())
                try:
                    await asyncio.wait({serving, stopped}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stopped.cancel()
            server.exit_now.set()
            await serving
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # uvicorn raises SystemExit when startup fails
            self._fail(exc)

    def _server_started(self) -> None:
        self._started_count += 1
        if self._started_count == len(self._slots):
            self._ready.set()

    def _begin_stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()

    def _fail(self, exc: BaseException) -> None:
        with self._lock:
            if self._error is None:
                self._error = exc
        self._ready.set()
