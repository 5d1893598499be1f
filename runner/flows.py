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
- a ``FlowResult`` is ``ok`` exactly when it carries tokens: a login whose child
  delivered tokens stays a success whatever fails afterwards (saving them, stopping
  the child, closing its channel, releasing its lease: a warning each), and every
  other login ends with an error;
- the paste reader lives exactly as long as the logins: it is cancelled when the last
  login ends, and reads the terminal only when a byte is ready (no lingering thread);
- the event loop never waits on a file or on the host's code: token store reads and
  writes and lease releases run in daemon threads (a FIFO or a hung file system blocks
  one thread, bounded by that login's deadline, never the loop), and so do ``browser``
  and ``progress`` (below);
- host callbacks are contained: whatever ``browser``, ``pastes`` or ``progress`` raise
  becomes a ``HostCallbackWarning``, never a cancelled login or a lost result;
- the parent, never a child, writes the token store.

Progress delivery: ``progress`` is the host's code and may raise or block, so the
supervisor never calls it. Each sentence goes onto a queue that one daemon thread per
call drains in order (``_ProgressPump``). Before ``authorize_many`` returns, the queue is
flushed for at most ``_CALLBACK_GRACE`` seconds; a ``progress`` still blocked then is
abandoned (its thread is a daemon, so it cannot keep the host from exiting) and the
sentences after it are dropped, with a warning. One thread rather than a thread per
sentence keeps the order; a queue rather than ``anyio.to_thread`` keeps a blocked
``progress`` from holding one of anyio's (non-daemon, limited) worker threads.

Warnings (``runner.errors``: ``HostCallbackWarning``, ``LoginCleanupWarning``;
``runner.store.TokenStoreWarning``) are logged when they happen and warned when the
call returns normally, from its own frame, so that a host running with warnings as
errors gets them after every child is stopped, not in the middle of a login.

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
import queue
import select
import socket
import sys
import threading
import time
import warnings
import webbrowser
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping
from typing import Any, Final, TypeVar

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
    HostCallbackWarning,
    InvalidServerSpec,
    LoginCleanupWarning,
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
from runner.store import StoredLogin, TokenStore, TokenStoreWarning

__all__ = ["Browser", "Progress", "authorize_many", "authorize_many_sync"]

logger = logging.getLogger("runner")

Browser = Callable[[str, ServerSpec], object]
"""Opens an authorization URL for a person; called in a daemon thread (it may block)."""

Progress = Callable[[str | None, str], object]
"""Told of each login's progress: (server name or None, a sentence); called in order from
one daemon thread, never on the event loop (see "Progress delivery" above)."""

_STOP_GRACE: Final = 1.0  # seconds a child gets after Shutdown, then after SIGTERM
# Seconds the host's code gets once the logins are over: to take the last progress
# sentences, and for a pastes iterator to close.
_CALLBACK_GRACE: Final = 2.0

_T = TypeVar("_T")
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
            thread and may block (a blocked call is abandoned when its login ends).
            If it raises: a ``HostCallbackWarning`` and a progress sentence with the URL;
            the login keeps waiting (for a paste). None prints the URL and opens the
            system browser.
        pastes: Pasted callback URLs (or their query strings), routed to the login whose
            state they carry. None reads the terminal when stdin is a TTY. Read until the
            last login ends, then closed (``aclose``, at most ``_CALLBACK_GRACE`` s). If
            it raises: a ``HostCallbackWarning`` and no more pastes; no login is
            cancelled. It must honour cancellation (an iterator that swallows it cannot
            be stopped from the same event loop).
        interactive: False makes a login that needs a person fail at once with
            ``NeedsInteraction`` (stored or refreshable tokens still work).
        progress: ``progress(name, sentence)`` is told of each step, in order, from one
            daemon thread (not the event loop); default: logging. Every sentence is
            delivered before the call returns unless ``progress`` is still blocked
            ``_CALLBACK_GRACE`` s after the logins ended: then the rest is dropped. If it
            raises: a ``HostCallbackWarning`` (once), and the next sentences are still
            delivered. It never changes a result.
        start_method: How children start: ``"zygote"`` (forked from one pre-loaded
            interpreter; the default on Linux) or ``"spawn"`` (a fresh interpreter per
            login). See ``runner.launch``.

    Returns:
        One ``FlowResult`` per server, in the order given, whatever happened to others
        or to the host's callbacks; ``ok`` exactly when it carries tokens.

    Raises:
        InvalidServerSpec: A server entry is malformed (nothing was started).

    Warns:
        HostCallbackWarning: ``browser``, ``pastes`` or ``progress`` raised or hung.
        LoginCleanupWarning: Tidying up after a login failed (its result is kept).
        TokenStoreWarning: A token file could not be read or the tokens not saved.
    """
    specs = parse_servers(servers)
    if not (isinstance(timeout, int | float) and timeout > 0):
        raise InvalidServerSpec(f"timeout must be a positive number of seconds, not {timeout!r}")
    if pastes is None and interactive and _stdin_is_terminal():
        pastes = _terminal_lines()
    results: dict[str, FlowResult] = {}
    notices = _Notices()
    pump = _ProgressPump(progress if progress is not None else _log_progress, notices)
    try:
        async with open_launcher(start_method) as launcher, anyio.create_task_group() as outer:
            supervisor = _Supervisor(
                store=store if store is not None else TokenStore(),
                registry=registry if registry is not None else Registry(),
                launcher=launcher,
                browser=browser if browser is not None else _system_browser,
                interactive=interactive,
                progress=pump.tell,
                notices=notices,
            )
            if pastes is not None:
                outer.start_soon(supervisor.read_pastes, pastes)
            async with anyio.create_task_group() as logins:
                for spec in specs:
                    logins.start_soon(supervisor.run_login, spec, spec.timeout or timeout, results)
            outer.cancel_scope.cancel()  # the logins are over: so is reading pastes
    finally:
        with anyio.CancelScope(shield=True):  # bounded: _CALLBACK_GRACE at most
            await pump.close(_CALLBACK_GRACE)
    notices.emit()  # only on a normal return: never on top of a cancellation
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
        progress: Callable[[str | None, str], None],
        notices: _Notices,
    ) -> None:
        self.store = store
        self.registry = registry
        self.launcher = launcher
        self.browser = browser
        self.interactive = interactive
        self.progress = progress  # never raises, never blocks: _ProgressPump.tell
        self.notices = notices
        self.router = PasteRouter()
        self.channels: dict[str, Channel] = {}

    # --- pastes ---------------------------------------------------------------------

    async def read_pastes(self, pastes: AsyncIterable[str]) -> None:
        """Route pastes until the source ends or fails (then: no more pastes) or the
        logins are over (cancelled); the source is closed either way."""
        try:
            iterator = aiter(pastes)
        except Exception as exc:  # not an async iterable: the host's mistake
            self._pastes_failed(exc)
            return
        try:
            while True:
                try:
                    text = await anext(iterator)
                except StopAsyncIteration:
                    return
                except Exception as exc:
                    self._pastes_failed(exc)
                    return
                await self._route_paste(text)
        finally:
            await self._close_pastes(iterator)

    async def _route_paste(self, text: object) -> None:
        if not isinstance(text, str):
            self.progress(None, f"ignored a paste that is not text ({type(text).__name__})")
            return
        decision = self.router.route(text)
        if isinstance(decision, Deliver):
            channel = self.channels.get(decision.login)
            if channel is not None:
                try:
                    await channel.send(DeliverCallback(query=decision.target))
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                    self.progress(decision.login, "that login has just ended")
        elif decision.message:
            self.progress(None, decision.message)

    def _pastes_failed(self, exc: Exception) -> None:
        self.notices.warn(
            HostCallbackWarning,
            f"pastes raised {type(exc).__name__}: {exc}; no more pasted URLs are read "
            "(logins can still finish in the browser)",
        )

    async def _close_pastes(self, iterator: AsyncIterator[str]) -> None:
        """Close the source (an async generator's ``finally`` runs now, not at garbage
        collection), shielded from the cancellation that ended the reading, bounded."""
        aclose = getattr(iterator, "aclose", None)
        if not callable(aclose):
            return
        with anyio.move_on_after(_CALLBACK_GRACE, shield=True) as scope:
            try:
                await aclose()
            except Exception as exc:
                self.notices.warn(
                    HostCallbackWarning, f"pastes raised on close: {type(exc).__name__}: {exc}"
                )
        if scope.cancelled_caught:
            self.notices.warn(
                HostCallbackWarning,
                f"pastes did not close within {_CALLBACK_GRACE:g} s; abandoned",
            )

    # --- one login ------------------------------------------------------------------

    async def run_login(
        self, spec: ServerSpec, limit: float, results: dict[str, FlowResult]
    ) -> None:
        started = time.monotonic()
        outcome = _Outcome()
        late: FlowError | None = None  # what went wrong after the outcome, or instead of one
        try:
            with anyio.move_on_after(limit) as deadline:
                await self._login(spec, limit, started + limit, outcome)
            if deadline.cancelled_caught and outcome.error is None and outcome.tokens is None:
                doing = f" ({outcome.doing} did not finish)" if outcome.doing else ""
                outcome.error = FlowTimeout(f"{spec.name}: no login within {limit:g} s{doing}")
        except FlowError as exc:
            late = exc
        except Exception as exc:  # a bug of ours must still end as this login's result
            logger.exception("login %s failed unexpectedly", spec.name)
            late = FlowCrashed(f"{spec.name}: {type(exc).__name__}: {exc}")
        # ok exactly when there are tokens (FlowResult's contract): tokens the child
        # delivered are a success, whatever failed after them.
        error: FlowError | None = None
        if outcome.tokens is not None:
            if late is not None:
                self.notices.warn(LoginCleanupWarning, f"{spec.name}: logged in, but then: {late}")
        else:
            error = outcome.error or late
            if error is None:
                error = FlowCrashed(f"{spec.name}: the login ended without an outcome")
        results[spec.name] = FlowResult(
            name=spec.name,
            ok=error is None,
            tokens=None if outcome.tokens is None else outcome.tokens.tokens,
            error=error,
            port=outcome.port,
            interactive=outcome.interactive,
            elapsed=time.monotonic() - started,
        )
        self.progress(spec.name, "logged in" if error is None else str(error))

    async def _login(
        self, spec: ServerSpec, limit: float, deadline: float, outcome: _Outcome
    ) -> None:
        stored = await self._load(spec, outcome)
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
                await self._tidy_up(spec, process, channel, lease)

    async def _tidy_up(
        self,
        spec: ServerSpec,
        process: ChildProcess | None,
        channel: Channel | None,
        lease: Lease,
    ) -> None:
        """Stop the child, close the channel, release the lease, in that order; a step
        that fails is a warning and never skips the next (call shielded). The lease is
        released only after the child's exit was waited for."""
        if process is not None:
            try:
                await _stop_child(process, channel)
            except Exception as exc:
                self.notices.warn(
                    LoginCleanupWarning,
                    f"{spec.name}: stopping its child failed ({type(exc).__name__}: {exc}); "
                    "killed it",
                )
                await _kill_and_wait(process)
        if channel is not None:
            try:
                await channel.aclose()
            except Exception as exc:
                self.notices.warn(
                    LoginCleanupWarning,
                    f"{spec.name}: closing its channel failed: {type(exc).__name__}: {exc}",
                )
        try:
            # Off the loop: the registry takes a file lock and rewrites its file.
            await _in_daemon_thread(f"runner-release-{spec.name}", lease.release)
        except Exception as exc:
            self.notices.warn(
                LoginCleanupWarning,
                f"{spec.name}: its port lease could not be released "
                f"({type(exc).__name__}: {exc}); the record goes stale when this "
                "process exits",
            )

    # --- the token store, off the event loop ------------------------------------------

    async def _load(self, spec: ServerSpec, outcome: _Outcome) -> StoredLogin | None:
        """The stored login, read in a daemon thread (a FIFO or a hung file system
        blocks that thread until the login's deadline, not the loop); one that cannot
        be read is a warning, and the login proceeds as if nothing were stored."""
        # Kept if the deadline cancels the read, to explain the timeout.
        outcome.doing = "reading its stored login"
        try:
            stored = await _in_daemon_thread(
                f"runner-store-{spec.name}", functools.partial(self.store.load, spec.name)
            )
        except Exception as exc:  # runner.store.TokenStoreError, or any failure so far
            self.notices.warn(
                TokenStoreWarning,
                f"{spec.name}: its stored login could not be read "
                f"({type(exc).__name__}: {exc}); it logs in afresh",
            )
            stored = None
        outcome.doing = None
        return stored

    async def _save(self, spec: ServerSpec, login: StoredLogin) -> None:
        """Save delivered tokens in a daemon thread; a failure is a warning (the tokens
        are still returned), and so is the deadline coming first."""
        try:
            await _in_daemon_thread(
                f"runner-store-{spec.name}", functools.partial(self.store.save, spec.name, login)
            )
        except anyio.get_cancelled_exc_class():
            self.notices.warn(
                TokenStoreWarning,
                f"{spec.name}: saving its tokens had not finished when the login ended; "
                "they may not be saved",
            )
            raise
        except Exception as exc:
            self.notices.warn(
                TokenStoreWarning,
                f"{spec.name}: its tokens were not saved ({type(exc).__name__}: {exc}); "
                "the next run logs in again",
            )

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
                # A success from here on, whether or not saving works.
                outcome.tokens = login
                outcome.interactive = message.interactive
                await self._save(spec, login)
            elif isinstance(message, LoginFailed):
                outcome.error = error_from_wire(message.kind, message.message)

    async def _open_browser(self, spec: ServerSpec, url: str) -> None:
        self.progress(spec.name, "waiting for the login in the browser")
        try:
            opened = await _in_daemon_thread(
                f"runner-browser-{spec.name}", functools.partial(self.browser, url, spec)
            )
            if inspect.isawaitable(opened):
                await opened
        except Exception as exc:
            self.notices.warn(
                HostCallbackWarning,
                f"{spec.name}: browser raised {type(exc).__name__}: {exc}; "
                "the login waits for a pasted callback",
            )
            self.progress(
                spec.name,
                f"could not open a browser ({type(exc).__name__}: {exc}); "
                f"open this address yourself: {url}",
            )
        except anyio.get_cancelled_exc_class():
            # The login ended with the browser call still running: allowed (a console
            # browser blocks until it is closed); the thread is abandoned.
            logger.debug("%s: the browser call was still running; abandoned", spec.name)
            raise


async def _in_daemon_thread(name: str, call: Callable[[], _T]) -> _T:
    """Run ``call()`` in a daemon thread and wait for it, cancellably.

    Not ``anyio.to_thread``: a browser call may block for as long as a console browser
    stays open (``webbrowser`` waits for it), and opening a FIFO blocks until a writer
    comes; anyio's worker threads are not daemon threads (an abandoned one would keep
    the host from exiting after Ctrl-C) and share one capacity limiter (stuck ones
    would starve the registry's). Here a cancelled call is abandoned: the thread
    touches nothing of ours when it returns, and whatever it raises is kept in it.
    """
    done = anyio.Event()
    abandoned = threading.Event()
    outcome: list[_T] = []
    failure: list[Exception] = []
    token = anyio.lowlevel.current_token()

    def run() -> None:
        try:
            outcome.append(call())
        except Exception as exc:
            failure.append(exc)
        finally:
            # An abandoned call tells nobody: reaching the loop would block this thread
            # on whatever the loop's thread does by then.
            if not abandoned.is_set():
                with contextlib.suppress(RuntimeError):  # the event loop is already gone
                    anyio.from_thread.run_sync(done.set, token=token)

    threading.Thread(target=run, name=name, daemon=True).start()
    try:
        await done.wait()
    except BaseException:
        abandoned.set()
        raise
    if failure:
        raise failure[0]
    if not outcome:  # it raised a BaseException (SystemExit) that ended the thread
        raise RuntimeError(f"{name}: the call ended without a result")
    return outcome[0]


class _Notices:
    """The warnings of one call: logged at once, warned when the call returns (thread-
    safe: the progress thread adds to it too)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[tuple[type[Warning], str]] = []

    def warn(self, category: type[Warning], message: str) -> None:
        logger.warning("%s", message)
        with self._lock:
            self._pending.append((category, message))

    def emit(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for category, message in pending:
            # stacklevel 3: the frame that awaited authorize_many.
            warnings.warn(message, category, stacklevel=3)


class _ProgressPump:
    """Delivers ``progress(name, sentence)`` in order from one daemon thread.

    ``tell`` never blocks and never raises (the supervisor calls it anywhere, also in
    ``finally`` blocks); ``close`` flushes, bounded. A ``progress`` that raises is
    warned about once and still called for the next sentences; one still blocked when
    ``close`` gives up is abandoned with the sentences after it.
    """

    def __init__(self, progress: Progress, notices: _Notices) -> None:
        self._progress = progress
        self._notices = notices
        self._queue: queue.SimpleQueue[tuple[str | None, str] | None] = queue.SimpleQueue()
        self._abandoned = threading.Event()
        self._drained = anyio.Event()
        self._token = anyio.lowlevel.current_token()
        self._failures = 0
        self._thread = threading.Thread(target=self._run, name="runner-progress", daemon=True)
        self._thread.start()

    def tell(self, name: str | None, message: str) -> None:
        self._queue.put((name, message))

    def _run(self) -> None:
        try:
            while not self._abandoned.is_set():
                item = self._queue.get()
                if item is None:
                    break
                try:
                    self._progress(*item)
                except Exception as exc:
                    self._failed(item, exc)
        finally:
            # Once abandoned nobody waits for the drain, and reaching the loop would
            # block this thread on whatever the loop's thread does by then.
            if not self._abandoned.is_set():
                with contextlib.suppress(RuntimeError):  # the event loop is already gone
                    anyio.from_thread.run_sync(self._drained.set, token=self._token)

    def _failed(self, item: tuple[str | None, str], exc: Exception) -> None:
        self._failures += 1  # only this thread counts
        if self._failures == 1:
            name, message = item
            self._notices.warn(
                HostCallbackWarning,
                f"progress raised {type(exc).__name__}: {exc} (told {name}: {message!r}); "
                "later failures of progress are logged only",
            )
        else:
            logger.debug("progress raised again: %s: %s", type(exc).__name__, exc)

    async def close(self, grace: float) -> None:
        """Deliver what is queued, waiting at most ``grace`` seconds; then abandon it."""
        self._queue.put(None)
        with anyio.move_on_after(grace):
            await self._drained.wait()
            return
        self._abandoned.set()
        self._notices.warn(
            HostCallbackWarning,
            f"progress had not returned {grace:g} s after the logins ended; "
            "abandoned, with the sentences after it",
        )


class _Outcome:
    """What one login has come to so far (filled in as messages arrive)."""

    def __init__(self) -> None:
        self.tokens: StoredLogin | None = None
        self.error: FlowError | None = None
        self.port: int | None = None
        self.interactive = False
        self.doing: str | None = None  # what is being waited for, to explain a timeout


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


async def _kill_and_wait(process: ChildProcess) -> None:
    """The last resort when ``_stop_child`` failed: SIGKILL, then wait for the exit
    (bounded: a process that outlives SIGKILL by this long is the kernel's matter)."""
    with contextlib.suppress(Exception):
        process.kill()
    with anyio.move_on_after(_STOP_GRACE), contextlib.suppress(Exception):
        await process.wait()


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
