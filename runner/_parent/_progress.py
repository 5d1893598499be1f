"""Delivering ``progress(event)`` to the host: ``ProgressPump``; and ``event_progress``,
which turns a host's deprecated ``progress(name, sentence)`` into one.

``progress`` is the host's code and may raise or block, so the supervisor never calls it.
Invariants:

- ``tell`` never blocks and never raises (the supervisor calls it anywhere, ``finally``
  blocks included);
- events are delivered in the order told, from one daemon thread per call: one thread
  rather than a thread per sentence keeps the order; a queue rather than
  ``anyio.to_thread`` keeps a blocked ``progress`` from holding one of anyio's
  (non-daemon, limited) worker threads;
- ``close(grace)`` delivers what is queued, waiting at most ``grace`` seconds; a
  ``progress`` still blocked then is abandoned with the sentences after it (its thread is
  a daemon, so it cannot keep the host from exiting), with a ``HostCallbackWarning``;
- a ``progress`` that raises is warned about once and still called for the next events.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import queue
import threading
import warnings
from collections.abc import Callable

import anyio
import anyio.from_thread
import anyio.lowlevel

from runner._core._events import Event
from runner._parent._notices import Notices
from runner.errors import HostCallbackWarning

__all__ = ["LegacyProgress", "Progress", "ProgressPump", "event_progress", "log_progress"]

logger = logging.getLogger("runner")

Progress = Callable[[Event], object]
"""Told of each step of each login: a ``runner.events.Event``; called in order from one
daemon thread, never on the event loop (see ``runner._parent._progress``)."""

LegacyProgress = Callable[[str | None, str], object]
"""Before events: ``progress(name, sentence)``. Still accepted, with a DeprecationWarning."""


def log_progress(event: Event) -> None:
    """The default ``progress``: the ``runner`` logger, at INFO."""
    logger.info("%s: %s", event.name or "runner", event)


def event_progress(progress: Progress | LegacyProgress | None, *, stacklevel: int) -> Progress:
    """The host's ``progress`` as one that takes events: the default when None; a
    ``progress(name, sentence)`` (two required positional parameters) wrapped, with a
    DeprecationWarning pointing ``stacklevel`` frames up from the caller; any other callable
    as it is (one whose signature cannot be read is taken to accept an event)."""
    if progress is None:
        return log_progress
    if not _takes_name_and_sentence(progress):
        return progress  # type: ignore[return-value]  # a one-argument callable
    warnings.warn(
        "progress(name, sentence) is deprecated and will stop working in the next release: "
        "take one argument, a runner.events.Event (event.name is the server's name, "
        "str(event) the sentence)",
        DeprecationWarning,
        stacklevel=stacklevel + 1,
    )
    legacy: LegacyProgress = progress  # type: ignore[assignment]

    def told(event: Event) -> object:
        return legacy(event.name, str(event))

    return told


def _takes_name_and_sentence(progress: Callable[..., object]) -> bool:
    try:
        signature = inspect.signature(progress)
    except (TypeError, ValueError):  # a builtin or extension type without a signature
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    required = [
        parameter
        for parameter in signature.parameters.values()
        if parameter.kind in positional and parameter.default is inspect.Parameter.empty
    ]
    return len(required) >= 2


class ProgressPump:
    """Delivers ``progress(event)`` in order from one daemon thread."""

    def __init__(self, progress: Progress, notices: Notices) -> None:
        self._progress = progress
        self._notices = notices
        self._queue: queue.SimpleQueue[Event | None] = queue.SimpleQueue()
        self._abandoned = threading.Event()
        self._drained = anyio.Event()
        self._token = anyio.lowlevel.current_token()
        self._failures = 0
        self._thread = threading.Thread(target=self._run, name="runner-progress", daemon=True)
        self._thread.start()

    def tell(self, event: Event) -> None:
        self._queue.put(event)

    def _run(self) -> None:
        try:
            while not self._abandoned.is_set():
                event = self._queue.get()
                if event is None:
                    break
                try:
                    self._progress(event)
                except Exception as exc:
                    self._failed(event, exc)
        finally:
            # Once abandoned nobody waits for the drain, and reaching the loop would
            # block this thread on whatever the loop's thread does by then.
            if not self._abandoned.is_set():
                with contextlib.suppress(RuntimeError):  # the event loop is already gone
                    anyio.from_thread.run_sync(self._drained.set, token=self._token)

    def _failed(self, event: Event, exc: Exception) -> None:
        self._failures += 1  # only this thread counts
        if self._failures == 1:
            self._notices.warn(
                HostCallbackWarning,
                f"progress raised {type(exc).__name__}: {exc} (told {event.name}: "
                f"{str(event)!r}); "
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
            "abandoned, with the events after it",
        )
