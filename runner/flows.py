"""``authorize_many``: run every login in its own child process, on its own leased port.

The parent's side of ../shared/DESIGN.md "Shape". Invariants:

- a login's port is leased (bound, listening) before its child starts; the child
  inherits that very socket (``pass_fds``) and the parent closes its copy once the
  child reports ``ServerReady``; nothing is bound twice;
- every child has an owner: the task running its login, whose ``finally`` (shielded
  from cancellation) sends ``Shutdown``, then terminates, then kills, always waits for
  the exit, and only then releases the lease -- on success, failure, timeout,
  cancellation and Ctrl-C alike;
- children start in their own session: a terminal's Ctrl-C reaches the parent only,
  which then stops them as above;
- one login's failure is its own ``FlowResult``; it never cancels another login;
- the paste reader lives exactly as long as the logins: it is cancelled when the last
  login ends, and reads the terminal only when a byte is ready (no lingering thread);
- the parent, never a child, writes the token store.

Start method: ``runner.launch`` starts the children, never by forking this process
(it runs an event loop and threads): on Linux they are forked by a pre-loaded zygote
process, elsewhere each is a fresh ``python -m runner.child``; both hand over the
descriptors and start the child in its own session. ``scripts/bench_spawn.py`` measures
both (``multiprocessing``'s spawn was not used: it re-imports the parent's ``__main__``
and pickles arguments for nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import math
import os
import select
import socket
import sys
import threading
import time
import webbrowser
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping
from typing import Any, Final

import anyio
import anyio.abc
import anyio.from_thread
import anyio.lowlevel

from portlease import Lease, LeaseTimeout, PortBusy, Registry
from runner.channel import Channel
from runner.errors import (
    CallbackPortBusy,
    FlowCrashed,
    FlowError,
    FlowTimeout,
    InvalidServerSpec,
    error_from_wire,
)
from runner.launch import ChildProcess, Launcher, StartMethod, open_launcher
from runner.lifecycle import LoginState, next_state
from runner.messages import (
    AuthorizationStarted,
    CallbackAccepted,
    CallbackRejected,
    DeliverCallback,
    LoginFailed,
    ProtocolViolation,
    ServerReady,
    Shutdown,
    StartLogin,
    TokensIssued,
)
from runner.routing import Deliver, PasteRouter
from runner.spec import FlowResult, ServerSpec, parse_servers
from runner.store import StoredLogin, TokenStore

__all__ = ["Browser", "Progress", "authorize_many", "authorize_many_sync"]

logger = logging.getLogger("runner")

Browser = Callable[[str, ServerSpec], object]
"""Opens an authorization URL for a person; called in a daemon thread (it may block)."""

Progress = Callable[[str | None, str], object]
"""Told of each login's progress: (server name or None, a sentence)."""

_STOP_GRACE: Final = 1.0  # seconds a child gets after Shutdown, then after SIGTERM
_STDERR_TAIL: Final = 2048  # bytes of a child's stderr kept to explain a crash


async def authorize_many(
    servers: Iterable[ServerSpec] | Mapping[str, Mapping[str, Any]],
    *,
    store: TokenStore | None = None,
    registry: Registry | None = None,
    timeout: float = 300.0,
    browser: Browser | None = None,
    pastes: AsyncIterable[str] | None = None,
    interactive: bool = True,
    progress: Progress | None = None,
    start_method: StartMethod | None = None,
) -> dict[str, FlowResult]:
    """Log in to every server at once, each in its own child process.

    Args:
        servers: ``ServerSpec`` items, or a hermes-style mapping
            ``{"name": {"url": ..., "oauth": {...}}}``.
        store: Where tokens and client registrations are kept (default: per-user dir).
        registry: The port lease registry (default: ``portlease.Registry()``).
        timeout: Seconds each login may take, unless its spec sets its own.
        browser: ``browser(url, spec)`` opens the authorization URL; it runs in a daemon
            thread and may block. None prints the URL and opens the system browser.
        pastes: Pasted callback URLs (or their query strings), routed to the login whose
            state they carry. None reads the terminal when stdin is a TTY.
        interactive: False makes a login that needs a person fail at once with
            ``NeedsInteraction`` (stored or refreshable tokens still work).
        progress: ``progress(name, sentence)`` is told of each step; default: logging.
        start_method: How children start: ``"zygote"`` (forked from one pre-loaded
            interpreter; the default on Linux) or ``"spawn"`` (a fresh interpreter per
            login). See ``runner.launch``.

    Returns:
        One ``FlowResult`` per server, in the order given, whatever happened to others.

    Raises:
        InvalidServerSpec: A server entry is malformed (nothing was started).
    """
    specs = parse_servers(servers)
    if not (isinstance(timeout, int | float) and timeout > 0):
        raise InvalidServerSpec(f"timeout must be a positive number of seconds, not {timeout!r}")
    if pastes is None and interactive and _stdin_is_terminal():
        pastes = _terminal_lines()
    results: dict[str, FlowResult] = {}
    async with open_launcher(start_method) as launcher, anyio.create_task_group() as outer:
        supervisor = _Supervisor(
            store=store if store is not None else TokenStore(),
            registry=registry if registry is not None else Registry(),
            launcher=launcher,
            browser=browser if browser is not None else _system_browser,
            interactive=interactive,
            progress=progress if progress is not None else _log_progress,
        )
        if pastes is not None:
            outer.start_soon(supervisor.read_pastes, pastes)
        async with anyio.create_task_group() as logins:
            for spec in specs:
                logins.start_soon(supervisor.run_login, spec, spec.timeout or timeout, results)
        outer.cancel_scope.cancel()  # the logins are over: so is reading pastes
    return {spec.name: results[spec.name] for spec in specs}


def authorize_many_sync(
    servers: Iterable[ServerSpec] | Mapping[str, Mapping[str, Any]],
    **kwargs: Any,
) -> dict[str, FlowResult]:
    """``authorize_many`` for hosts without an event loop (same arguments)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError(
            "authorize_many_sync() was called from a running event loop; "
            "await authorize_many() instead"
        )
    return anyio.run(functools.partial(authorize_many, servers, **kwargs))


class _Supervisor:
    """Owns the logins of one ``authorize_many`` call: their children and leases."""

    def __init__(
        self,
        *,
        store: TokenStore,
        registry: Registry,
        launcher: Launcher,
        browser: Browser,
        interactive: bool,
        progress: Progress,
    ) -> None:
        self.store = store
        self.registry = registry
        self.launcher = launcher
        self.browser = browser
        self.interactive = interactive
        self.progress = progress
        self.router = PasteRouter()
        self.channels: dict[str, Channel] = {}

    # --- pastes ---------------------------------------------------------------------

    async def read_pastes(self, pastes: AsyncIterable[str]) -> None:
        async for text in pastes:
            decision = self.router.route(text)
            if isinstance(decision, Deliver):
                channel = self.channels.get(decision.login)
                if channel is not None:
                    try:
                        await channel.send(DeliverCallback(query=decision.target))
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                        self.progress(decision.login, "that login has just ended")
                    continue
            elif decision.message:
                self.progress(None, decision.message)

    # --- one login ------------------------------------------------------------------

    async def run_login(
        self, spec: ServerSpec, limit: float, results: dict[str, FlowResult]
    ) -> None:
        started = time.monotonic()
        outcome = _Outcome()
        try:
            with anyio.move_on_after(limit) as deadline:
                await self._login(spec, limit, started + limit, outcome)
            if deadline.cancelled_caught and outcome.error is None and outcome.tokens is None:
                outcome.error = FlowTimeout(f"{spec.name}: no login within {limit:g} s")
        except FlowError as exc:
            outcome.error = exc
        except Exception as exc:  # a bug of ours must still end as this login's result
            logger.exception("login %s failed unexpectedly", spec.name)
            outcome.error = FlowCrashed(f"{spec.name}: {type(exc).__name__}: {exc}")
        if outcome.tokens is None and outcome.error is None:
            outcome.error = FlowCrashed(f"{spec.name}: the login ended without an outcome")
        results[spec.name] = FlowResult(
            name=spec.name,
            ok=outcome.error is None,
            tokens=None if outcome.tokens is None else outcome.tokens.tokens,
            error=outcome.error,
            port=outcome.port,
            interactive=outcome.interactive,
            elapsed=time.monotonic() - started,
        )
        self.progress(spec.name, "logged in" if outcome.error is None else str(outcome.error))

    async def _login(
        self, spec: ServerSpec, limit: float, deadline: float, outcome: _Outcome
    ) -> None:
        stored = self.store.load(spec.name)
        if stored is not None and stored.server_url != spec.url:
            # Tokens and a registration belong to the server that issued them.
            self.progress(spec.name, f"stored login is for {stored.server_url}; not reused")
            stored = None
        lease = await self._lease(spec, stored, deadline)
        outcome.port = lease.port
        process: ChildProcess | None = None
        channel: Channel | None = None
        stderr_tail = bytearray()
        try:
            ours, theirs = socket.socketpair()
            try:
                process = await self.launcher.start(lease.socket, theirs)
            except BaseException:
                ours.close()
                raise
            finally:
                theirs.close()
            channel = await Channel.from_socket(ours)
            lease.hand_over(process.pid)
            async with anyio.create_task_group() as helpers:
                if process.stderr is not None:
                    helpers.start_soon(_keep_tail, process.stderr, stderr_tail)
                await channel.send(
                    StartLogin(
                        name=spec.name,
                        server_url=spec.url,
                        redirect_uri=lease.url(spec.callback_path),
                        scope=spec.scope,
                        client_id=spec.client_id,
                        client_secret=spec.client_secret,
                        client_name=spec.client_name,
                        # The child's own deadline comes a moment before ours, so that it
                        # can say why it stopped before we stop it.
                        timeout=max(0.1, deadline - time.monotonic() - 0.25),
                        limit=limit,
                        interactive=self.interactive,
                        stored=None if stored is None else stored.to_dict(),
                    )
                )
                await self._converse(spec, channel, lease, helpers, outcome)
                helpers.cancel_scope.cancel()
            if outcome.error is None and outcome.tokens is None:
                code = await _exit_code(process)
                tail = bytes(stderr_tail).decode(errors="replace").strip().splitlines()
                why = f": {tail[-1]}" if tail else ""
                outcome.error = FlowCrashed(
                    f"{spec.name}: the login's child process exited ({code}) without an "
                    f"outcome{why}"
                )
        finally:
            self.router.disarm(spec.name)
            self.channels.pop(spec.name, None)
            with anyio.CancelScope(shield=True):
                if process is not None:
                    await _stop_child(process, channel)
                if channel is not None:
                    await channel.aclose()
                lease.release()

    async def _lease(self, spec: ServerSpec, stored: StoredLogin | None, deadline: float) -> Lease:
        """Lease the redirect port: the configured one, else the one a stored
        registration names (re-registering if it is taken), else any."""
        pinned = _registered_port(stored, spec)
        if spec.redirect_port:
            port, wait = spec.redirect_port, max(0.0, deadline - time.monotonic())
        elif pinned:
            port, wait = pinned, 0.0
        else:
            port, wait = 0, 0.0
        try:
            return await _acquire(self.registry, spec, port, wait)
        except (PortBusy, LeaseTimeout) as exc:
            if spec.redirect_port:
                raise CallbackPortBusy(f"{spec.name}: {exc}") from exc
            self.progress(spec.name, f"port {port} is taken ({exc}); registering again")
            return await _acquire(self.registry, spec, 0, 0.0)

    async def _converse(
        self,
        spec: ServerSpec,
        channel: Channel,
        lease: Lease,
        helpers: anyio.abc.TaskGroup,
        outcome: _Outcome,
    ) -> None:
        """Follow the child's messages until its final one (or its silence)."""
        state = LoginState.STARTING
        while not state.final:
            try:
                message = await channel.receive()
                if message is None:
                    return
                state = next_state(state, message)
            except ProtocolViolation as exc:
                outcome.error = FlowCrashed(f"{spec.name}: the child broke the protocol: {exc}")
                return
            if isinstance(message, ServerReady):
                lease.close_socket()
                self.channels[spec.name] = channel
                self.progress(spec.name, f"listening on {lease.url(spec.callback_path)}")
            elif isinstance(message, AuthorizationStarted):
                outcome.interactive = True
                self.router.arm(spec.name, message.state)
                helpers.start_soon(self._open_browser, spec, message.url)
            elif isinstance(message, CallbackRejected):
                self.progress(spec.name, f"pasted callback not accepted: {message.reason}")
            elif isinstance(message, CallbackAccepted):
                self.router.disarm(spec.name)
                self.progress(spec.name, f"callback received ({message.source}); getting tokens")
            elif isinstance(message, TokensIssued):
                try:
                    login = StoredLogin.from_dict(message.login)
                except ValueError as exc:
                    outcome.error = FlowCrashed(f"{spec.name}: the child sent bad tokens: {exc}")
                    return
                self.store.save(spec.name, login)
                outcome.tokens = login
                outcome.interactive = message.interactive
            elif isinstance(message, LoginFailed):
                outcome.error = error_from_wire(message.kind, message.message)

    async def _open_browser(self, spec: ServerSpec, url: str) -> None:
        self.progress(spec.name, "waiting for the login in the browser")
        try:
            opened = await _in_daemon_thread(self.browser, url, spec)
            if inspect.isawaitable(opened):
                await opened
        except Exception as exc:
            self.progress(
                spec.name,
                f"could not open a browser ({type(exc).__name__}: {exc}); "
                f"open this address yourself: {url}",
            )


async def _in_daemon_thread(browser: Browser, url: str, spec: ServerSpec) -> object:
    """Call ``browser`` in a daemon thread and wait for it, cancellably.

    Not ``anyio.to_thread``: a browser call may block for as long as a console browser
    stays open (``webbrowser`` waits for it), and anyio's worker threads are not daemon
    threads, so a cancelled call would keep the host from exiting after Ctrl-C. Here a
    cancelled call is abandoned: the thread touches nothing of ours when it returns.
    """
    done = anyio.Event()
    outcome: list[object] = []
    failure: list[Exception] = []
    token = anyio.lowlevel.current_token()

    def call() -> None:
        try:
            outcome.append(browser(url, spec))
        except Exception as exc:
            failure.append(exc)
        finally:
            with contextlib.suppress(RuntimeError):  # the event loop is already gone
                anyio.from_thread.run_sync(done.set, token=token)

    threading.Thread(target=call, name=f"runner-browser-{spec.name}", daemon=True).start()
    await done.wait()
    if failure:
        raise failure[0]
    return outcome[0] if outcome else None


class _Outcome:
    """What one login has come to so far (filled in as messages arrive)."""

    def __init__(self) -> None:
        self.tokens: StoredLogin | None = None
        self.error: FlowError | None = None
        self.port: int | None = None
        self.interactive = False


def _registered_port(stored: StoredLogin | None, spec: ServerSpec) -> int | None:
    """The port of the redirect URI a stored dynamic registration pins, if any."""
    if stored is None or stored.client_info is None or spec.client_id is not None:
        return None
    for uri in stored.client_info.redirect_uris or ():
        if (
            uri.host in (spec.redirect_host, f"[{spec.redirect_host}]")
            and uri.path == spec.callback_path
        ):
            return uri.port
    return None


async def _acquire(registry: Registry, spec: ServerSpec, port: int, wait: float) -> Lease:
    """``registry.acquire`` in a worker thread, releasing the lease if we are cancelled
    while the thread was still getting it."""
    got: list[Lease] = []

    def acquire() -> None:
        got.append(
            registry.acquire(
                owner=f"runner:{spec.name}",
                port=port,
                host=spec.redirect_host,
                wait=wait,
                meta={"server": spec.url},
            )
        )

    try:
        await anyio.to_thread.run_sync(acquire)
    except BaseException:
        for lease in got:
            lease.release()
        raise
    return got[0]


async def _stop_child(process: ChildProcess, channel: Channel | None) -> None:
    """Shutdown, then SIGTERM, then SIGKILL; always wait for the exit. Call shielded."""
    if process.returncode is None and channel is not None:
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            await channel.send(Shutdown())
    # (step, grace): after Shutdown and after SIGTERM a grace period; after SIGKILL the
    # wait has no limit: the lease is released only once the port is provably closed.
    steps: tuple[tuple[Callable[[], None] | None, float | None], ...] = (
        (None, _STOP_GRACE),
        (process.terminate, _STOP_GRACE),
        (process.kill, None),
    )
    for stop, grace in steps:
        if process.returncode is not None:
            break
        if stop is not None:
            with contextlib.suppress(ProcessLookupError):
                stop()
        with anyio.move_on_after(grace if grace is not None else math.inf):
            await process.wait()
    if process.stderr is not None:
        await process.stderr.aclose()


async def _exit_code(process: ChildProcess) -> int | None:
    with anyio.move_on_after(_STOP_GRACE):
        return await process.wait()
    return process.returncode


async def _keep_tail(stream: anyio.abc.ByteReceiveStream, tail: bytearray) -> None:
    """Drain a child's stderr (so it never blocks), keeping the last bytes."""
    try:
        async for chunk in stream:
            tail += chunk
            del tail[:-_STDERR_TAIL]
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        pass


def _system_browser(url: str, spec: ServerSpec) -> None:
    print(f"\nLog in to {spec.name}: {url}", file=sys.stderr, flush=True)
    if not webbrowser.open(url):
        print(
            "Could not open a browser. Open the address above, log in, then paste the "
            "address your browser lands on here.",
            file=sys.stderr,
            flush=True,
        )


def _log_progress(name: str | None, message: str) -> None:
    logger.info("%s: %s", name or "runner", message)


def _stdin_is_terminal() -> bool:
    if sys.platform == "win32":  # no add_reader for consoles: pass pastes= there
        return False
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (ValueError, OSError):
        return False


async def _terminal_lines() -> AsyncIterator[str]:
    """Lines typed or pasted into the terminal, read only when a byte is ready, so that
    nothing is left reading stdin once the logins are over."""
    loop = asyncio.get_running_loop()
    fd = sys.stdin.fileno()
    ready = asyncio.Event()
    loop.add_reader(fd, ready.set)
    buffer = b""
    try:
        while True:
            await ready.wait()
            ready.clear()
            if not select.select([fd], [], [], 0)[0]:
                # The reader callback can run after this task already read the line it
                # announced; a read() now would block the whole event loop.
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                yield line.decode(errors="replace")
    finally:
        loop.remove_reader(fd)
