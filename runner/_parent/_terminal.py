"""Pasted callback URLs read from the terminal, when stdin is one.

Invariants: the terminal is read only when a byte is ready (``add_reader`` plus a
zero-timeout ``select`` before every ``read``), so nothing lingers reading stdin once the
logins are over and the event loop never blocks on it; the reader is removed when the
iterator is closed or cancelled. Written against asyncio directly: anyio has no "wait until
this descriptor is readable" for a terminal that survives the iterator's cancellation
without a thread. POSIX only (``stdin_is_terminal`` is False on Windows: pass ``pastes=``).
"""

from __future__ import annotations

import asyncio
import os
import select
import sys
from collections.abc import AsyncIterator

__all__ = ["stdin_is_terminal", "terminal_lines"]


def stdin_is_terminal() -> bool:
    if sys.platform == "win32":  # no add_reader for consoles: pass pastes= there
        return False
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (ValueError, OSError):
        return False


async def terminal_lines() -> AsyncIterator[str]:
    """Lines typed or pasted into the terminal, read only when a byte is ready, so that
    nothing is left reading stdin once the logins are over."""
    loop = asyncio.get_running_loop()
    fd = sys.stdin.fileno()
    ready = asyncio.Event()
    loop.add_reader(fd, ready.set)
    buffer = b""
    try:
        while True:
            await ready.wait()
            ready.clear()
            if not select.select([fd], [], [], 0)[0]:
                # The reader callback can run after this task already read the line it
                # announced; a read() now would block the whole event loop.
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                yield line.decode(errors="replace")
    finally:
        loop.remove_reader(fd)
