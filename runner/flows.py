"""``authorize_many``: run every login in its own child process, on its own leased port.

The public API (``authorize_many``, ``authorize_many_sync``, ``Browser``, ``Progress``);
the parent's side of docs/architecture.md "Shape" is built from these modules, each with
its own invariants:

- ``runner.supervisor``: owns each login's lease, child and channel, and carries out
  what the pure ``runner.lifecycle`` (messages) and ``runner.port_policy`` (ports) decide;
- ``runner.child_lifetime``: a child from its start to its exit (``start_child``);
- ``runner.launch``: how children start (zygote or spawn), never by forking this process;
  opened lazily, at the first child (``open_lazy_launcher``);
- ``runner.refresh``: whether a stored login is valid, and refreshing it here;
- ``runner.offloop``: the host's browser and the file system, in daemon threads;
- ``runner.progress``: the host's ``progress``, in order, from one daemon thread;
- ``runner.notices``: warnings logged at once and warned when the call returns;
- ``runner.terminal``: pasted URLs read from the terminal, only when a byte is ready.

What this function adds: every spec and the timeout are checked before anything starts;
a call whose logins are all answered from the store (valid or refreshed tokens) starts no
process and leases no port (the launcher, a zygote on Linux, opens at the first child);
the paste reader lives exactly as long as the logins; the progress queue is flushed for at
most ``CALLBACK_GRACE`` seconds before returning; warnings are warned only on a normal
return, from the caller's frame, after every child is stopped and every lease released.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterable, Iterable, Mapping
from typing import Any

import anyio

from portlease import Registry
from runner.errors import InvalidServerSpec
from runner.launch import StartMethod, open_lazy_launcher
from runner.notices import Notices
from runner.offloop import Browser, system_browser
from runner.progress import Progress, ProgressPump, log_progress
from runner.spec import FlowResult, ServerSpec, parse_servers
from runner.store import TokenStore
from runner.supervisor import CALLBACK_GRACE, Supervisor
from runner.terminal import stdin_is_terminal, terminal_lines

__all__ = ["Browser", "Progress", "authorize_many", "authorize_many_sync"]


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
            last login ends, then closed (``aclose``, at most ``CALLBACK_GRACE`` s). If
            it raises: a ``HostCallbackWarning`` and no more pastes; no login is
            cancelled. It must honour cancellation (an iterator that swallows it cannot
            be stopped from the same event loop).
        interactive: False makes a login that needs a person fail at once with
            ``NeedsInteraction`` (stored or refreshable tokens still work).
        progress: ``progress(name, sentence)`` is told of each step, in order, from one
            daemon thread (not the event loop); default: logging. Every sentence is
            delivered before the call returns unless ``progress`` is still blocked
            ``CALLBACK_GRACE`` s after the logins ended: then the rest is dropped. If it
            raises: a ``HostCallbackWarning`` (once), and the next sentences are still
            delivered. It never changes a result.
        start_method: How children start: ``"zygote"`` (forked from one pre-loaded
            interpreter; the default on Linux) or ``"spawn"`` (a fresh interpreter per
            login). See ``runner.launch``.

    Returns:
        One ``FlowResult`` per server, in the order given, whatever happened to others
        or to the host's callbacks; ``ok`` exactly when it carries tokens.

    Raises:
        InvalidServerSpec: A server entry is malformed, or ``timeout`` is not a positive
            number (it is part of the servers' configuration); nothing was started.

    Warns:
        HostCallbackWarning: ``browser``, ``pastes`` or ``progress`` raised or hung.
        LoginCleanupWarning: Tidying up after a login failed (its result is kept).
        TokenStoreWarning: A token file could not be read or the tokens not saved.
    """
    specs = parse_servers(servers)
    if not (isinstance(timeout, int | float) and timeout > 0):
        raise InvalidServerSpec(f"timeout must be a positive number of seconds, not {timeout!r}")
    if pastes is None and interactive and stdin_is_terminal():
        pastes = terminal_lines()
    results: dict[str, FlowResult] = {}
    notices = Notices()
    pump = ProgressPump(progress if progress is not None else log_progress, notices)
    try:
        async with (
            open_lazy_launcher(start_method) as launcher,
            anyio.create_task_group() as outer,
        ):
            supervisor = Supervisor(
                store=store if store is not None else TokenStore(),
                registry=registry if registry is not None else Registry(),
                launcher=launcher,
                browser=browser if browser is not None else system_browser,
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
        with anyio.CancelScope(shield=True):  # bounded: CALLBACK_GRACE at most
            await pump.close(CALLBACK_GRACE)
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
