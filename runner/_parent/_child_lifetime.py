"""A login's child from its start to its exit: ``start_child``, one async context manager.

Like trio's ``nursery.start``: entering returns once the child is ready (it reported
``ServerReady``), or raises; leaving stops it. The one place that writes the sequence
"socket pair, ``launcher.start(listener, theirs)``, close ``theirs``, a ``Channel`` over
``ours``, send the first message, wait for ``ServerReady``" and its reverse. Used by the
supervisor, the launch tests and ``scripts/bench_spawn.py``. Invariants:

- the parent keeps no copy of the child's end of the socket pair: it is closed right after
  the start, so the child's exit is the channel's end of stream;
- ``on_started(process)`` runs right after the start, before anything is sent (the
  supervisor hands its lease over to the child's pid there, and starts draining stderr);
- the first message is built when it is sent (``first()``), so a time it gives the child is
  counted from then, not from before a slow start;
- entering raises ``ChildNotReady`` when the child's first word is anything but
  ``ServerReady`` (another message, a line that is none, end of stream); the child is
  stopped and waited for before that propagates;
- leaving (normally, by an error or by cancellation) stops the child, shielded from
  cancellation: ``Shutdown``, then ``SIGTERM``, then ``SIGKILL``, a grace period after each
  but the last, and always waits for the exit; then closes its stderr and the channel. A
  step that fails is reported to ``on_cleanup_failure`` and never skips the next; a child
  whose stopping failed is killed and waited for. When ``start_child`` is left, the child
  has exited (or outlived ``SIGKILL`` by a grace period: the kernel's matter).

The launcher, the listener and the lease stay the caller's: this module binds nothing,
releases nothing, and knows nothing of OAuth.
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Final

import anyio
import anyio.abc

from runner._core._messages import Message, ParentMessage, ProtocolViolation, ServerReady, Shutdown
from runner._io._channel import Channel
from runner._parent._launch import ChildProcess, Launcher

__all__ = [
    "STDERR_TAIL",
    "STOP_GRACE",
    "ChildNotReady",
    "RunningChild",
    "keep_tail",
    "start_child",
    "stop_child",
]

logger = logging.getLogger("runner")

STOP_GRACE: Final = 1.0  # seconds a child gets after Shutdown, then after SIGTERM
STDERR_TAIL: Final = 2048  # bytes of a child's stderr kept to explain a crash

_CHANNEL_GONE = (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)


class ChildNotReady(Exception):
    """The child's first word was not ``ServerReady``. ``received`` is what came instead
    (None: end of stream, the child is gone); ``process`` has exited when this reaches the
    caller of ``start_child``."""

    def __init__(self, received: Message | ProtocolViolation | None, process: ChildProcess):
        super().__init__(f"the child sent {_describe(received)} instead of ServerReady")
        self.received = received
        self.process = process


@dataclass(frozen=True)
class RunningChild:
    """A started, ready child: its process, its channel and the ``ServerReady`` it sent."""

    process: ChildProcess
    channel: Channel
    ready: ServerReady

    async def exit_code(self) -> int | None:
        """The child's exit code, waiting up to ``STOP_GRACE`` for it (None: still running)."""
        with anyio.move_on_after(STOP_GRACE):
            return await self.process.wait()
        return self.process.returncode


@contextlib.asynccontextmanager
async def start_child(
    launcher: Launcher,
    listener: socket.socket,
    first: Callable[[], ParentMessage],
    *,
    on_started: Callable[[ChildProcess], None] | None = None,
    on_cleanup_failure: Callable[[str], None] | None = None,
) -> AsyncIterator[RunningChild]:
    """Start a child serving ``listener``, send it ``first()``, and yield it once ready.

    Raises:
        ChildNotReady: its first word was not ``ServerReady`` (it has exited by then).
        LauncherError: it could not be started (nothing to stop).
    """
    report = on_cleanup_failure if on_cleanup_failure is not None else _log_cleanup_failure
    ours, theirs = socket.socketpair()
    try:
        process = await launcher.start(listener, theirs)
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()  # the child has its own copy: its exit ends our stream
    channel: Channel | None = None
    try:
        channel = await Channel.from_socket(ours)
        if on_started is not None:
            on_started(process)
        yield RunningChild(process, channel, await _await_ready(process, channel, first))
    finally:
        if channel is None:
            ours.close()
        with anyio.CancelScope(shield=True):
            await _stop_and_close(process, channel, report)


async def _await_ready(
    process: ChildProcess, channel: Channel, first: Callable[[], ParentMessage]
) -> ServerReady:
    received: Message | ProtocolViolation | None
    try:
        await channel.send(first())
        received = await channel.receive()
    except ProtocolViolation as exc:
        received = exc
    except _CHANNEL_GONE:
        received = None  # gone before it could listen: the same as end of stream
    if not isinstance(received, ServerReady):
        raise ChildNotReady(received, process)
    return received


async def _stop_and_close(
    process: ChildProcess, channel: Channel | None, report: Callable[[str], None]
) -> None:
    """Stop the child, then close the channel; a failing step is reported, never skips
    the next (call shielded)."""
    try:
        await stop_child(process, channel)
    except Exception as exc:
        report(f"stopping its child failed ({type(exc).__name__}: {exc}); killed it")
        await _kill_and_wait(process)
    if channel is not None:
        try:
            await channel.aclose()
        except Exception as exc:
            report(f"closing its channel failed: {type(exc).__name__}: {exc}")


async def stop_child(process: ChildProcess, channel: Channel | None) -> None:
    """Shutdown, then SIGTERM, then SIGKILL; always wait for the exit. Call shielded."""
    if process.returncode is None and channel is not None:
        with contextlib.suppress(*_CHANNEL_GONE):
            await channel.send(Shutdown())
    # (step, grace): after Shutdown and after SIGTERM a grace period; after SIGKILL the
    # wait has no limit: the caller releases the lease only once the port is provably closed.
    steps: tuple[tuple[Callable[[], None] | None, float | None], ...] = (
        (None, STOP_GRACE),
        (process.terminate, STOP_GRACE),
        (process.kill, None),
    )
    for stop, grace in steps:
        if process.returncode is not None:
            break
        if stop is not None:
            with contextlib.suppress(ProcessLookupError):
                stop()
        with anyio.move_on_after(grace if grace is not None else math.inf):
            await process.wait()
    if process.stderr is not None:
        await process.stderr.aclose()


async def _kill_and_wait(process: ChildProcess) -> None:
    """The last resort when ``stop_child`` failed: SIGKILL, then wait for the exit
    (bounded: a process that outlives SIGKILL by this long is the kernel's matter)."""
    with contextlib.suppress(Exception):
        process.kill()
    with anyio.move_on_after(STOP_GRACE), contextlib.suppress(Exception):
        await process.wait()


async def keep_tail(stream: anyio.abc.ByteReceiveStream, tail: bytearray) -> None:
    """Drain a child's stderr (so it never blocks on a full pipe), keeping the last
    ``STDERR_TAIL`` bytes in ``tail``; ends when the stream ends or is closed."""
    try:
        async for chunk in stream:
            tail += chunk
            del tail[:-STDERR_TAIL]
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        pass


def _describe(received: Message | ProtocolViolation | None) -> str:
    if received is None:
        return "nothing (end of stream)"
    if isinstance(received, ProtocolViolation):
        return f"a line that is no message ({received})"
    return type(received).__name__


def _log_cleanup_failure(message: str) -> None:
    logger.warning("%s", message)
