"""Calls that must not run on the event loop, each in a daemon thread of its own: the
host's ``browser``, token-store reads and writes, a server's login lock, lease releases.

Invariants:

- the event loop never waits on a file or on the host's code: a FIFO, a hung file system
  or a console browser blocks one thread, never the loop; the caller's deadline still
  bounds the wait (a cancelled call is abandoned, not waited for);
- an abandoned thread touches nothing of the caller's when it returns, and what it
  raises stays in it; threads are daemons, so an abandoned one never keeps the host from
  exiting after Ctrl-C;
- what these calls raise is contained: a warning (``HostCallbackWarning``,
  ``TokenStoreWarning``) and, for the browser, a progress sentence with the URL; never a
  cancelled login or a lost result. Only the lease release reports its failure to the
  caller (the supervisor words that warning);
- ``holding`` never leaks a login lock: taken in a daemon thread, released in one
  (shielded) when the block ends however it ends, and a lock that a cancelled wait
  obtains after all is released by the thread that obtained it.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import sys
import threading
import webbrowser
from collections.abc import AsyncIterator, Callable
from typing import Protocol, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel

from runner._core._events import BrowserFailed, Event
from runner._core._spec import ServerSpec
from runner._core._stored import StoredLogin
from runner._io._threads import in_daemon_thread
from runner._parent._notices import Notices
from runner.errors import HostCallbackWarning, TokenStoreWarning

__all__ = [
    "Browser",
    "LoginLock",
    "LoginStore",
    "cimd_refused",
    "holding",
    "load_login",
    "mark_cimd_refused",
    "open_browser",
    "register_system_browsers",
    "release_lease",
    "save_login",
    "system_browser",
]

logger = logging.getLogger("runner")

_T = TypeVar("_T")

Browser = Callable[[str, ServerSpec], object]
"""Opens an authorization URL for a person; called in a daemon thread (it may block)."""


class LoginLock(Protocol):
    """A store's per-server login lock (``runner._stores._token_store.TokenStore.hold``)."""

    def hold(self, name: str, timeout: float) -> contextlib.AbstractContextManager[None]: ...


class LoginStore(LoginLock, Protocol):
    """What the supervisor needs of a token store (``runner._stores._token_store.TokenStore``)."""

    def load(self, name: str) -> StoredLogin | None: ...
    def save(self, name: str, login: StoredLogin) -> object: ...
    def cimd_refused(self, name: str) -> bool: ...
    def mark_cimd_refused(self, name: str) -> None: ...


@contextlib.asynccontextmanager
async def holding(store: LoginLock, name: str, timeout: float) -> AsyncIterator[None]:
    """``store.hold(name, timeout)`` for a block on an event loop: the lock is taken in a
    daemon thread (the loop never waits on it) and released in one, shielded, when the
    block ends (normally, by an exception, or cancelled).

    Cancelled while waiting for the lock: the wait is abandoned, and if the thread gets the
    lock after all it releases it at once itself; nothing stays locked.

    Raises:
        whatever ``hold`` raises (``TokenStoreError``: held past ``timeout``).
    """
    held = store.hold(name, timeout)
    guard = threading.Lock()
    gave_up = False
    entered = False

    def take() -> None:
        nonlocal entered
        held.__enter__()
        with guard:
            if not gave_up:
                entered = True
                return
        held.__exit__(None, None, None)  # the caller left meanwhile: nobody else will

    def release() -> None:
        held.__exit__(None, None, None)

    try:
        await in_daemon_thread(f"runner-lock-{name}", take)
    except BaseException:
        with guard:
            gave_up = True
            release_now = entered
        if release_now:  # taken, but the news came too late (cancelled on the way back)
            with anyio.CancelScope(shield=True):
                await in_daemon_thread(f"runner-unlock-{name}", release)
        raise
    try:
        yield
    finally:
        with anyio.CancelScope(shield=True):
            await in_daemon_thread(f"runner-unlock-{name}", release)


async def open_browser(
    browser: Browser,
    spec: ServerSpec,
    url: str,
    notices: Notices,
    progress: Callable[[Event], None],
) -> None:
    """``browser(url, spec)`` in a daemon thread (awaiting what it returns, if awaitable);
    if it raises, a warning and the URL for the person to open. Cancelled (the login
    ended) while it still runs: allowed, the thread is abandoned."""
    try:
        opened = await in_daemon_thread(
            f"runner-browser-{spec.name}", functools.partial(browser, url, spec)
        )
        if inspect.isawaitable(opened):
            await opened
    except Exception as exc:
        notices.warn(
            HostCallbackWarning,
            f"{spec.name}: browser raised {type(exc).__name__}: {exc}; "
            "the login waits for a pasted callback",
        )
        progress(BrowserFailed(spec.name, f"{type(exc).__name__}: {exc}", url))
    except anyio.get_cancelled_exc_class():
        # A console browser blocks until it is closed: the login may end first.
        logger.debug("%s: the browser call was still running; abandoned", spec.name)
        raise


async def load_login(store: LoginStore, name: str, notices: Notices) -> StoredLogin | None:
    """The stored login; one that cannot be read is a warning, and None (a fresh login)."""
    try:
        return await in_daemon_thread(f"runner-store-{name}", functools.partial(store.load, name))
    except Exception as exc:  # runner._stores._token_store.TokenStoreError, or any failure so far
        notices.warn(
            TokenStoreWarning,
            f"{name}: its stored login could not be read "
            f"({type(exc).__name__}: {exc}); it logs in afresh",
        )
        return None


async def save_login(store: LoginStore, name: str, login: StoredLogin, notices: Notices) -> None:
    """Save delivered tokens; a failure is a warning (the tokens are still returned), and
    so is the deadline coming first."""
    try:
        await in_daemon_thread(f"runner-store-{name}", functools.partial(store.save, name, login))
    except anyio.get_cancelled_exc_class():
        notices.warn(
            TokenStoreWarning,
            f"{name}: saving its tokens had not finished when the login ended; "
            "they may not be saved",
        )
        raise
    except Exception as exc:
        notices.warn(
            TokenStoreWarning,
            f"{name}: its tokens were not saved ({type(exc).__name__}: {exc}); "
            "the next run logs in again",
        )


async def cimd_refused(store: LoginStore, name: str, notices: Notices) -> bool:
    """Whether the server refused the client metadata document; a store that cannot say is
    a warning, and True (dynamic registration needs no mark to work)."""
    try:
        return await in_daemon_thread(
            f"runner-store-{name}", functools.partial(store.cimd_refused, name)
        )
    except Exception as exc:
        notices.warn(
            TokenStoreWarning,
            f"{name}: whether its server refused the client metadata document could not be "
            f"read ({type(exc).__name__}: {exc}); it registers dynamically",
        )
        return True


async def mark_cimd_refused(store: LoginStore, name: str, notices: Notices) -> None:
    """Mark the refusal; a failure is a warning (the next login presents it again)."""
    try:
        await in_daemon_thread(
            f"runner-store-{name}", functools.partial(store.mark_cimd_refused, name)
        )
    except Exception as exc:
        notices.warn(
            TokenStoreWarning,
            f"{name}: the refusal of its client metadata document was not recorded "
            f"({type(exc).__name__}: {exc})",
        )


async def release_lease(name: str, release: Callable[[], None]) -> None:
    """``release()`` of a lease, off the loop (the registry takes a file lock and
    rewrites its file); raises what it raises."""
    await in_daemon_thread(f"runner-release-{name}", release)


def register_system_browsers() -> None:
    """Have ``webbrowser`` find this system's browsers now, once per process, before
    logins open them from several threads.

    ``webbrowser.open`` registers them at its first call, and in Python 3.11 a second thread
    calling it meanwhile sees a list still being filled (empty, at first) and returns False
    at once: "no browser could be opened" for one of two logins that started together.
    Registering first (blocking: it looks programs up on ``PATH``; call it off the event
    loop) closes that window. Nothing is opened here.
    """
    with contextlib.suppress(webbrowser.Error):
        webbrowser.get()


def system_browser(url: str, spec: ServerSpec) -> None:
    """The default ``browser``: print the URL, and open the system browser."""
    print(f"\nLog in to {spec.name}: {url}", file=sys.stderr, flush=True)
    if not webbrowser.open(url):
        print(
            "Could not open a browser. Open the address above, log in, then paste the "
            "address your browser lands on here.",
            file=sys.stderr,
            flush=True,
        )
