"""Calling what may block forever (a FIFO open, a stuck lock) without hanging the suite."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

#: What a FIFO must never cost: the call returns at once; this only has to beat "forever".
PROMPT = 5.0


def bounded(call: Callable[[], T], timeout: float = PROMPT) -> T:
    """Run ``call`` in a daemon thread; fail (not hang) if it does not return in ``timeout``.

    Whatever ``call`` raised is raised here, in the test's thread.
    """
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:  # handed to the test thread below
            failure.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout)
    assert not worker.is_alive(), f"still blocked after {timeout} s"
    if failure:
        raise failure[0]
    return outcome[0]
