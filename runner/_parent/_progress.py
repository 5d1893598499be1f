"""Delivering ``progress(name, sentence)`` to the host: ``ProgressPump``.

``progress`` is the host's code and may raise or block, so the supervisor never calls it.
Invariants:

- ``tell`` never blocks and never raises (the supervisor calls it anywhere, ``finally``
  blocks included);
- sentences are delivered in the order told, from one daemon thread per call: one thread
  rather than a thread per sentence keeps the order; a queue rather than
  ``anyio.to_thread`` keeps a blocked ``progress`` from holding one of anyio's
  (non-daemon, limited) worker threads;
- ``close(grace)`` delivers what is queued, waiting at most ``grace`` seconds; a
  ``progress`` still blocked then is abandoned with the sentences after it (its thread is
  a daemon, so it cannot keep the host from exiting), with a ``HostCallbackWarning``;
- a ``progress`` that raises is warned about once and still called for the next sentences.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable

import anyio
import anyio.from_thread
import anyio.lowlevel

from runner._parent._notices import Notices
from runner.errors import HostCallbackWarning

__all__ = ["Progress", "ProgressPump", "log_progress"]

logger = logging.getLogger("runner")

Progress = Callable[[str | None, str], object]
"""Told of each login's progress: (server name or None, a sentence); called in order from
one daemon thread, never on the event loop (see ``runner._parent._progress``)."""


def log_progress(name: str | None, message: str) -> None:
    """The default ``progress``: the ``runner`` logger, at INFO."""
    logger.info("%s: %s", name or "runner", message)


class ProgressPump:
    """Delivers ``progress(name, sentence)`` in order from one daemon thread."""

    def __init__(self, progress: Progress, notices: Notices) -> None:
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
