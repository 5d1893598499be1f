"""``Runner`` and ``authorize_many``: every login in its own child process, on its own port.

The public API (``Runner``, ``authorize_many``, ``authorize_many_sync``, ``Browser``,
``Progress``); a ``Runner`` owns the zygote between calls, ``authorize_many`` makes a
temporary one. The parent's side of docs/architecture.md "Shape" is built from these
modules, each with its own invariants:

- ``runner._parent._supervisor``: owns each login's lease, child and channel, and carries
  out what the pure ``runner._core._lifecycle`` (messages), ``runner._core._renewal``
  (stored logins) and ``runner._core._port_policy`` (ports) decide;
- ``runner._parent._child_lifetime``: a child from its start to its exit (``start_child``);
- ``runner._parent._launch``: how children start (zygote or spawn), never by forking this process;
  opened lazily, at the first child (``open_lazy_launcher``), for the ``Runner``'s block;
- ``runner._parent._refresher``: whether a stored login is valid, and refreshing it here;
- ``runner._parent._offloop``: the host's browser and the file system, in daemon threads;
- ``runner._parent._progress``: the host's ``progress``, in order, from one daemon thread;
- ``runner._parent._notices``: warnings logged at once and warned when the call returns;
- ``runner._parent._terminal``: pasted URLs read from the terminal, only when a byte is ready.

What ``Runner.authorize_many`` adds: every spec and the timeout are checked before
anything starts; a call whose logins are all answered from the store (valid or refreshed
tokens) starts no process and leases no port (the launcher, a zygote on Linux, opens at the
first child);
the paste reader lives exactly as long as the logins; the progress queue is flushed for at
most ``CALLBACK_GRACE`` seconds before returning; warnings are warned only on a normal
return, from the caller's frame, after every child is stopped and every lease released.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterable, Iterable, Mapping
from typing import Any

import anyio

from portlease import Registry
from runner._core._entries import parse_servers
from runner._core._renewal import LoginRequest
from runner._core._spec import FlowResult, ServerSpec
from runner._io._threads import in_daemon_thread
from runner._parent._launch import LazyLauncher, StartMethod, check_start_method, open_lazy_launcher
from runner._parent._notices import Notices
from runner._parent._offloop import Browser, register_system_browsers, system_browser
from runner._parent._progress import (
    LegacyProgress,
    Progress,
    ProgressPump,
    event_progress,
    log_progress,
)
from runner._parent._refresher import SharedTlsContext
from runner._parent._supervisor import CALLBACK_GRACE, Supervisor
from runner._parent._terminal import stdin_is_terminal, terminal_lines
from runner._stores._token_store import TokenStore
from runner.errors import InvalidServerSpec

__all__ = ["Browser", "Progress", "Runner", "authorize_many", "authorize_many_sync"]


class Runner:
    """Runs logins for a host, owning the start-up machinery (the zygote) between calls.

    >>> async with Runner(store=TokenStore(dir)) as runner:  # doctest: +SKIP
    ...     results = await runner.authorize_many(servers)
    ...     later = await runner.authorize_many(more_servers)  # no new zygote

    The way ``httpx.Client`` owns its connection pool and ``httpx.get`` makes a throwaway
    one: a host keeps one ``Runner`` for its lifetime, and the module-level
    ``authorize_many`` makes a temporary one per call.

    Guarantees:

    - the zygote (on Linux; see ``runner._parent._launch``) starts at the first login that needs a
      child, or at ``warm_up()``, and lives until the ``async with`` block ends, where it
      and every child are stopped and waited for; a call answered from the store starts
      nothing;
    - a zygote that dies (killed, out of memory) is replaced at the next login that needs
      one; the logins whose children it had already started go on without it;
    - calls may overlap (from tasks of the same event loop): each has its own logins,
      results, pastes and progress, and they share the zygote, the store and the registry.
      Two overlapping calls that both read the terminal (``pastes=None`` on a TTY) compete
      for its lines: give all but one their own ``pastes``.

    Not guaranteed: use from another thread or event loop than the one that entered the
    block; a ``Runner`` that is not entered raises ``RuntimeError`` at ``authorize_many``.

    Args:
        store: Where tokens and client registrations are kept (default: per-user dir).
        registry: The port lease registry (default: ``portlease.Registry()``).
        start_method: How children start: ``"zygote"`` (forked from one pre-loaded
            interpreter; the default on Linux) or ``"spawn"`` (a fresh interpreter per
            login). See ``runner._parent._launch``.

    Raises:
        ValueError: ``start_method`` is not a start method.
        RegistryError: The default registry's directory cannot be made ready.
    """

    def __init__(
        self,
        *,
        store: TokenStore | None = None,
        registry: Registry | None = None,
        start_method: StartMethod | None = None,
    ) -> None:
        self.store = store if store is not None else TokenStore()
        self.registry = registry if registry is not None else Registry()
        self.start_method: StartMethod = check_start_method(start_method)
        self._tls = SharedTlsContext()  # for refreshes in this process, built at the first
        self._launcher: LazyLauncher | None = None
        self._exit_stack: contextlib.AsyncExitStack | None = None
        self._entered = False

    async def __aenter__(self) -> Runner:
        if self._entered:
            raise RuntimeError("a Runner is entered once: make a new one")
        self._entered = True
        stack = contextlib.AsyncExitStack()
        self._launcher = await stack.enter_async_context(open_lazy_launcher(self.start_method))
        self._exit_stack = stack
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        stack, self._exit_stack = self._exit_stack, None
        if stack is not None:
            await stack.aclose()  # the zygote, if one runs, is stopped and waited for

    @property
    def zygotes_started(self) -> int:
        """How many zygotes this runner has started so far (0 for ``"spawn"``)."""
        if self._launcher is None or self.start_method != "zygote":
            return 0
        return self._launcher.opened_count

    async def warm_up(self) -> None:
        """Start the zygote now (if the start method has one) and return once it is ready,
        so that the first login does not wait for it. Does nothing for ``"spawn"``.

        Raises:
            RuntimeError: The runner is not entered.
            LauncherError: The zygote could not be started.
        """
        await self._open_launcher().warm_up()

    def _open_launcher(self) -> LazyLauncher:
        if self._exit_stack is None or self._launcher is None:
            state = "closed" if self._entered else "not entered"
            raise RuntimeError(
                f"this Runner is {state}: use it inside 'async with Runner(...) as runner:'"
            )
        return self._launcher

    async def authorize_many(
        self,
        servers: Iterable[ServerSpec] | Mapping[str, Mapping[str, Any]],
        *,
        timeout: float = 300.0,
        browser: Browser | None = None,
        pastes: AsyncIterable[str] | None = None,
        interactive: bool = True,
        progress: Progress | LegacyProgress | None = None,
    ) -> dict[str, FlowResult]:
        """Log in to every server at once, each in its own child process.

        Args:
            servers: ``ServerSpec`` items, or a hermes-style mapping
                ``{"name": {"url": ..., "oauth": {...}}}``.
            timeout: Seconds each login may take, unless its spec sets its own.
            browser: ``browser(url, spec)`` opens the authorization URL; it runs in a daemon
                thread and may block (a blocked call is abandoned when its login ends).
                If it raises: a ``HostCallbackWarning`` and a ``BrowserFailed`` event with the URL;
                the login keeps waiting (for a paste). None prints the URL and opens the
                system browser.
            pastes: Pasted callback URLs (or their query strings), routed to the login whose
                state they carry. None reads the terminal when stdin is a TTY. Read until the
                last login ends, then closed (``aclose``, at most ``CALLBACK_GRACE`` s). If
                it raises: a ``HostCallbackWarning`` and no more pastes; no login is
                cancelled. It must honour cancellation (an iterator that swallows it cannot
                be stopped from the same event loop).
            interactive: False makes a login that needs a person fail at once with
                ``NeedsInteraction`` (stored or refreshable tokens still work).
            progress: ``progress(event)`` is told of each step of each login, a
                ``runner.events.Event`` (``str(event)`` is a sentence), in order, from one
                daemon thread (not the event loop); default: logging. Every event is
                delivered before the call returns unless ``progress`` is still blocked
                ``CALLBACK_GRACE`` s after the logins ended: then the rest is dropped. If it
                raises: a ``HostCallbackWarning`` (once), and the next events are still
                delivered. It never changes a result. A ``progress(name, sentence)``
                still works, with a DeprecationWarning, until the next release.

        Returns:
            One ``FlowResult`` per server, in the order given, whatever happened to others
            or to the host's callbacks; ``ok`` exactly when it carries tokens.

        Raises:
            InvalidServerSpec: A server entry is malformed, or ``timeout`` is not a positive
                number (it is part of the servers' configuration); nothing was started.
            RuntimeError: The runner is not entered, or is closed.

        Warns:
            DeprecationWarning: ``progress`` takes ``(name, sentence)``.
            HostCallbackWarning: ``browser``, ``pastes`` or ``progress`` raised or hung.
            LoginCleanupWarning: Tidying up after a login failed (its result is kept).
            TokenStoreWarning: A token file could not be read or the tokens not saved.
        """
        specs = _checked_call(servers, timeout)
        return await self._run(
            specs,
            timeout=timeout,
            browser=browser,
            pastes=pastes,
            interactive=interactive,
            progress=event_progress(progress, stacklevel=2),
            requests={},
        )

    async def _run(
        self,
        specs: list[ServerSpec],
        *,
        timeout: float,
        browser: Browser | None,
        pastes: AsyncIterable[str] | None,
        interactive: bool,
        progress: Progress,
        requests: Mapping[str, LoginRequest],
    ) -> dict[str, FlowResult]:
        """``authorize_many`` of checked specs, with a host's ``requests`` (its challenges)
        for some of them (``runner._hosts._provider``)."""
        launcher = self._open_launcher()
        if browser is None and interactive:
            await in_daemon_thread("runner-browsers", register_system_browsers)
        if pastes is None and interactive and stdin_is_terminal():
            pastes = terminal_lines()
        results: dict[str, FlowResult] = {}
        notices = Notices()
        pump = ProgressPump(progress, notices)
        try:
            async with anyio.create_task_group() as outer:
                supervisor = Supervisor(
                    store=self.store,
                    registry=self.registry,
                    launcher=launcher,
                    browser=browser if browser is not None else system_browser,
                    interactive=interactive,
                    progress=pump.tell,
                    notices=notices,
                    tls=self._tls,
                )
                if pastes is not None:
                    outer.start_soon(supervisor.read_pastes, pastes)
                async with anyio.create_task_group() as logins:
                    for spec in specs:
                        logins.start_soon(
                            supervisor.run_login,
                            spec,
                            spec.timeout or timeout,
                            results,
                            requests.get(spec.name),
                        )
                outer.cancel_scope.cancel()  # the logins are over: so is reading pastes
        finally:
            with anyio.CancelScope(shield=True):  # bounded: CALLBACK_GRACE at most
                await pump.close(CALLBACK_GRACE)
        notices.emit()  # only on a normal return: never on top of a cancellation
        return {spec.name: results[spec.name] for spec in specs}


async def authorize_many(
    servers: Iterable[ServerSpec] | Mapping[str, Mapping[str, Any]],
    *,
    store: TokenStore | None = None,
    registry: Registry | None = None,
    timeout: float = 300.0,
    browser: Browser | None = None,
    pastes: AsyncIterable[str] | None = None,
    interactive: bool = True,
    progress: Progress | LegacyProgress | None = None,
    start_method: StartMethod | None = None,
) -> dict[str, FlowResult]:
    """Log in to every server at once, each in its own child process, through a temporary
    ``Runner`` (its zygote, if one starts, is stopped before this returns).

    ``store``, ``registry`` and ``start_method`` are the ``Runner``'s; the rest, and what is
    returned, raised and warned, are ``Runner.authorize_many``'s. A host that logs in more
    than once keeps a ``Runner`` instead, and pays for its zygote once.
    """
    # Refused before the Runner exists: its default registry creates a directory.
    specs = _checked_call(servers, timeout)
    told = event_progress(progress, stacklevel=2)
    async with Runner(store=store, registry=registry, start_method=start_method) as runner:
        return await runner.authorize_many(
            specs,
            timeout=timeout,
            browser=browser,
            pastes=pastes,
            interactive=interactive,
            progress=told,
        )


async def renew_login(
    spec: ServerSpec,
    request: LoginRequest,
    *,
    store: TokenStore,
    registry: Registry | None,
    timeout: float,
    browser: Browser | None,
    interactive: bool,
) -> FlowResult:
    """One server's login for a host that got ``request``'s challenge (or found nothing
    usable): the renewal policy under the server's lock, as ``authorize_many`` runs it,
    through a temporary ``Runner`` (a child, and a zygote, only if a person must log in)."""
    async with Runner(store=store, registry=registry) as runner:
        results = await runner._run(
            [spec],
            timeout=timeout,
            browser=browser,
            pastes=None,
            interactive=interactive,
            progress=log_progress,
            requests={spec.name: request},
        )
    return results[spec.name]


def _checked_call(
    servers: Iterable[ServerSpec] | Mapping[str, Mapping[str, Any]], timeout: object
) -> list[ServerSpec]:
    """The call's specs, once they and ``timeout`` are checked (``InvalidServerSpec``)."""
    specs = parse_servers(servers)
    if not (isinstance(timeout, int | float) and timeout > 0):
        raise InvalidServerSpec(f"timeout must be a positive number of seconds, not {timeout!r}")
    return specs


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
    if "progress" in kwargs:  # warned here, where the host called
        kwargs["progress"] = event_progress(kwargs["progress"], stacklevel=2)
    return anyio.run(functools.partial(authorize_many, servers, **kwargs))
