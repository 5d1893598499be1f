"""The zygote: one pre-loaded interpreter that forks each login's child in milliseconds.

``python -m runner._child._zygote --control-fd N`` (started by ``runner._parent._launch.Zygote``).

A fresh interpreter per login spends over a second importing the MCP SDK and uvicorn
(``scripts/bench_spawn.py``); with many logins at start-up that is most of the wait.
The zygote imports them once and forks a child per login. Forking is safe here and
only here: the zygote never starts a thread or an event loop (the parent has both,
which is why the parent never forks).

Control protocol: ``runner._core._zygote_protocol`` (versioned messages, one JSON object per
``SOCK_SEQPACKET`` packet), which this module and ``runner._parent._launch`` both import. The
parent sends ``Fork`` (with three descriptors) and ``Signal``; the zygote answers
``Ready`` once, ``Forked`` or ``Refused`` per ``Fork``, and ``Exited`` per reaped child.
A command it cannot decode is answered ``Refused(id=None)``: the zygote never guesses
what was meant, and the parent then treats it as broken.

Invariants:

- the zygote closes its copies of the passed descriptors right after forking;
- every child is reaped and its exit reported exactly once;
- a signal is delivered only to a child not yet reaped, so never to a recycled pid
  (a child that has not been reaped is alive or a zombie: its pid cannot be reused);
- a failed ``fork(2)`` (``EAGAIN``) is a ``Refused``, not the end of the zygote;
- at end of stream on the control socket (the parent is done, or gone) it gives its
  children a second to finish (each sees its own channel close), kills the rest, and
  exits; it ignores SIGINT, like the children.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import selectors
import signal
import socket
import sys
import time
import traceback
from typing import TYPE_CHECKING, Final

from runner._child import _sdk_subset as sdk_subset
from runner._core import _zygote_protocol as zp

if TYPE_CHECKING:
    from runner._child._login import Preloaded

__all__ = ["main"]

_FINISH_GRACE: Final = 1.0
_EXIT_INTERNAL: Final = 70  # EX_SOFTWARE: the child failed before reporting anything


def _send(control: socket.socket, message: zp.ZygoteFact) -> None:
    control.send(zp.encode(message))


def _reap(children: set[int], control: socket.socket) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            children.clear()
            return
        if pid == 0:
            return
        children.discard(pid)
        with contextlib.suppress(OSError):  # the parent may be gone; keep reaping
            _send(control, zp.Exited(pid=pid, code=os.waitstatus_to_exitcode(status)))


def _fork(fds: list[int], closing: list[int], preloaded: Preloaded) -> int:
    """Fork one login's child; in the child, never return."""
    pid = os.fork()
    if pid:
        return pid
    code = _EXIT_INTERNAL
    try:
        for fd in closing:
            os.close(fd)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setsid()
        listen_fd, channel_fd, stderr_fd = fds
        os.dup2(stderr_fd, 2)
        os.close(stderr_fd)
        from runner._child._login import serve_fds  # imported already: see serve()

        code = serve_fds(listen_fd, channel_fd, preloaded)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os._exit(code)


def _obey(
    control: socket.socket,
    data: bytes,
    fds: list[int],
    closing: list[int],
    children: set[int],
    preloaded: Preloaded,
) -> None:
    """Carry out one command. The caller closes ``fds`` (our copies) afterwards."""
    try:
        command = zp.decode(data)
    except zp.ZygoteProtocolError as exc:
        _send(control, zp.Refused(id=None, reason=str(exc)))
        return
    if isinstance(command, zp.Fork):
        if len(fds) != zp.FORK_FDS:
            _send(
                control,
                zp.Refused(id=command.id, reason=f"{len(fds)} descriptors, not {zp.FORK_FDS}"),
            )
            return
        try:
            pid = _fork(fds, closing, preloaded)
        except OSError as exc:  # EAGAIN, ENOMEM: this login fails, the others go on
            _send(control, zp.Refused(id=command.id, reason=f"fork: {exc.strerror}"))
            return
        children.add(pid)
        _send(control, zp.Forked(id=command.id, pid=pid))
    elif isinstance(command, zp.Signal):
        # Only a child not reaped yet: its pid is still its own (alive or a zombie).
        if command.pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(command.pid, command.sig)
    else:  # a fact sent the wrong way
        _send(control, zp.Refused(id=None, reason=f"{type(command).__name__} is not a command"))


def _finish(children: set[int]) -> None:
    deadline = time.monotonic() + _FINISH_GRACE
    while children and time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid:
            children.discard(pid)
        else:
            time.sleep(0.02)  # bounded wait for children that see their channel close
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in children:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def serve(control: socket.socket) -> None:
    """The zygote's loop; returns at end of stream on ``control``."""
    # The point of the zygote: pay once for the imports and for what each child would load
    # on first use (preload). Only the SDK's OAuth client, not the whole SDK: runner._child._login
    # needs no more (runner._child._sdk_subset), and the host's first login waits for this. Then
    # freeze the heap: objects that exist now are never traversed by a child's garbage
    # collector, so a collection in a child does not write to (and so copy) every page it
    # inherited. The collector is off until then: its passes over the growing heap cost
    # ~35 ms of the ~285 ms of imports (12%), and the cyclic garbage it would have freed is
    # too small to measure (a gc.collect() before freezing, 17-38 ms, changed no figure).
    gc.disable()
    sdk_subset.load_oauth_client()
    from runner._child._login import preload

    preloaded = preload()
    gc.freeze()
    gc.enable()  # for the zygote and, inherited, its children: over their own objects only

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # wakes select via wake_w
    children: set[int] = set()
    selector = selectors.DefaultSelector()
    selector.register(control, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    _send(control, zp.Ready())
    try:
        while True:
            for key, _ in selector.select():
                if key.fileobj == wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_r, 4096)
                    continue
                # One more byte and one more descriptor than allowed: an oversized packet
                # or a fourth descriptor is then seen (and refused), not silently cut.
                data, fds, flags, _addr = socket.recv_fds(
                    control, zp.MAX_PACKET_BYTES + 1, zp.FORK_FDS + 1
                )
                if not data:
                    for fd in fds:
                        os.close(fd)
                    return
                closing = [control.fileno(), wake_r, wake_w, selector.fileno()]
                if flags & (socket.MSG_CTRUNC | socket.MSG_TRUNC):
                    # Something was cut off: never act on part of a command.
                    _send(control, zp.Refused(id=None, reason="packet or descriptors cut off"))
                else:
                    _obey(control, data, fds, closing, children, preloaded)
                for fd in fds:
                    os.close(fd)
            _reap(children, control)
    finally:
        selector.close()
        signal.set_wakeup_fd(-1)
        os.close(wake_r)
        os.close(wake_w)
        _finish(children)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner._child._zygote", description=__doc__)
    parser.add_argument("--control-fd", type=int, required=True)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    control = socket.socket(fileno=args.control_fd)
    try:
        serve(control)
    finally:
        control.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
