"""Calls that must not block the event loop, each in a daemon thread of its own.

Guarantees (``in_daemon_thread``): the event loop never waits on the call; a cancelled call
is abandoned (the thread touches nothing of the caller's when it returns, and what it
raises stays in it); the threads are daemons, so an abandoned one never keeps the process
from exiting after Ctrl-C. Used for the host's browser, token-store reads and writes, a
server's login lock, lease releases and TLS contexts (``runner._parent._offloop`` has the
contained wrappers).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel

__all__ = ["in_daemon_thread"]

_T = TypeVar("_T")


async def in_daemon_thread(name: str, call: Callable[[], _T]) -> _T:
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
