"""The warnings of one ``authorize_many`` call: logged when they happen, warned at its end.

Invariants: ``warn`` never raises and is thread-safe (the progress thread adds to it too);
``emit`` warns each pending notice once, in the order they came, from the frame that
awaited ``authorize_many`` (so a host running with warnings as errors gets them after
every child is stopped and every lease released, not in the middle of a login).
"""

from __future__ import annotations

import logging
import threading
import warnings

__all__ = ["Notices"]

logger = logging.getLogger("runner")


class Notices:
    """The warnings of one call: logged at once, warned when the call returns."""

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
            # stacklevel 3: the frame that awaited authorize_many (emit <- authorize_many).
            warnings.warn(message, category, stacklevel=3)
