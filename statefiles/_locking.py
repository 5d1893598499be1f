"""An exclusive lock across processes on a separate lock file (``leases.json.lock``, a token
store's ``<name>.lock``).

Uses filelock's public ``lock_descriptor`` / ``unlock_descriptor``: the same native primitive as
``filelock.FileLock`` (``flock`` on Unix, ``LockFileEx`` on Windows), so it excludes any
``FileLock("…/leases.json.lock")`` another tool may take, but without ``FileLock``'s per-acquire
bookkeeping (reentrancy, thread-local state, fork tracking, soft fallback), which costs many
times the lock itself (``scripts/bench_lease.py`` prints both; README, "Leasing a port"). A
registry operation holds the lock once per read-modify-write and never re-enters it, so none
of that machinery is used.

Waiting: the first attempt never blocks. When the lock is taken, on POSIX a helper thread makes
a *blocking* ``flock`` call and the caller waits for it with a timeout: the kernel wakes the
waiter at the release, and a waiter burns no CPU that the holder needs (8 busy processes on 2
cores in scripts/bench_lease.py). Polling, filelock's way (50 ms by default), misses short
release windows: even a poll of a few milliseconds gave a p99 many times the hold there. If
the timeout passes first, the thread is abandoned and releases and closes the descriptor
itself whenever its ``flock`` returns. Windows polls (every 0.1-2 ms).

Invariants:
    * The lock is held from ``lock_file`` to ``unlock_file``; the descriptor is opened and closed
      there (callers pair them in try/finally), so nothing is inherited across a fork or spawn
      and every thread contends on its own open file description (``flock`` excludes those
      from each other as well).
    * Exactly one party closes a descriptor: the caller, or an abandoned helper thread.
    * The lock file is a separate file that is never unlinked or moved aside (waiters share one
      inode; another process may hold the lock on whatever stands there) and never holds data;
      it is created 0600. Something else in its place (a directory, a symlink, which is never
      followed) is an ``OSError`` here; ``leasefile`` turns it into a ``RegistryError`` saying
      what is there and what to do.
    * Past ``timeout`` ``lock_file`` raises ``filelock.Timeout`` (the caller wraps it).
"""

from __future__ import annotations

import os
import random
import sys
import threading
import time
from typing import Final

import filelock

__all__ = ["lock_file", "unlock_file"]

_POLL_FIRST: Final = 0.0001
_POLL_MAX: Final = 0.002


def lock_file(path: str, timeout: float) -> int:
    """Take the exclusive lock on ``path``; return the descriptor to pass to ``unlock_file``.

    Raises:
        filelock.Timeout: the lock stayed taken for ``timeout`` seconds.
        OSError: the lock file cannot be opened or created.
    """
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o600)
    try:
        if filelock.lock_descriptor(fd, blocking=False):
            return fd
    except BaseException:
        os.close(fd)
        raise
    if sys.platform == "win32":  # pragma: no cover - Windows only
        try:
            _poll(fd, path, timeout)
        except BaseException:
            os.close(fd)
            raise
        return fd
    _block(fd, path, timeout)  # owns fd from here: closes it on failure
    return fd


def unlock_file(fd: int) -> None:
    """Release the lock taken by ``lock_file`` and close its descriptor."""
    try:
        filelock.unlock_descriptor(fd)
    finally:
        os.close(fd)


class _Blocker:
    """A blocking ``flock`` in a helper thread that the caller can stop waiting for."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.done = threading.Event()
        self.error: OSError | None = None
        self.abandoned = False
        self.guard = threading.Lock()

    def run(self) -> None:
        import fcntl  # POSIX only

        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except OSError as exc:
            self.error = exc
        with self.guard:
            if not self.abandoned:
                self.done.set()
                return
        # The caller gave up: the descriptor is ours to release and close.
        try:
            if self.error is None:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            os.close(self.fd)


def _block(fd: int, path: str, timeout: float) -> None:
    blocker = _Blocker(fd)
    thread = threading.Thread(target=blocker.run, name="portlease-lock-wait", daemon=True)
    try:
        thread.start()
    except BaseException:
        os.close(fd)
        raise
    try:
        blocker.done.wait(timeout)
    except BaseException:  # interrupted while waiting: leave nothing locked or open behind
        _give_up(blocker, thread)
        raise
    with blocker.guard:
        acquired = blocker.done.is_set()
        if not acquired:
            blocker.abandoned = True  # the thread closes fd when its flock returns
    if not acquired:
        raise filelock.Timeout(path)
    thread.join()
    if blocker.error is not None:
        os.close(fd)
        raise blocker.error


def _give_up(blocker: _Blocker, thread: threading.Thread) -> None:
    with blocker.guard:
        if not blocker.done.is_set():
            blocker.abandoned = True  # the thread closes fd
            return
    thread.join()
    if blocker.error is None:
        unlock_file(blocker.fd)
    else:
        os.close(blocker.fd)


def _poll(fd: int, path: str, timeout: float) -> None:  # pragma: no cover - Windows only
    deadline = time.monotonic() + timeout
    delay = _POLL_FIRST
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise filelock.Timeout(path)
        # Jitter keeps contenders from polling in lockstep.
        time.sleep(min(delay * (0.5 + random.random()), left))  # noqa: S311 - not crypto
        if filelock.lock_descriptor(fd, blocking=False):
            return
        delay = min(delay * 2, _POLL_MAX)
