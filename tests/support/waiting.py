"""Waiting, always bounded: for a condition on shared state (polled), and for a call that
may block forever (a FIFO open, a stuck lock) without hanging the suite."""

from __future__ import annotations

import threading
import time
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


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds passed; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return bool(predicate())
        time.sleep(interval)


def wait_for(condition: Callable[[], bool], timeout: float, interval: float = 0.005) -> None:
    """Poll ``condition`` (on shared state, such as a registry) until it holds; fail the test
    if it does not within ``timeout`` seconds."""
    assert wait_until(condition, timeout, interval), "condition not reached in time"
