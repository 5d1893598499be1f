"""Process facts from the OS: start times (liveness), names, who listens on a port. I/O leaf.

Invariants:
    * Answers are in the vocabulary of ``records``: a start time (psutil ``create_time``
      seconds), ``None`` for "no such process", ``DENIED`` (the one ``records.Denied``
      member, compared by identity) for "exists, may not look".
    * Errors never escape as psutil exceptions: what cannot be learnt is ``DENIED`` (liveness,
      fail closed) or ``None`` (names, listeners).
    * ``LivenessProbe`` memoises per instance only; make one per registry operation, so no
      answer outlives the lock hold it was taken under.

On Linux the start time is read from ``/proc/<pid>/stat`` with psutil's own formula
(``starttime / SC_CLK_TCK + btime``): about ten times cheaper than building a
``psutil.Process``, which matters when a lease file names many processes. Elsewhere psutil is
asked. A zombie (exited, not yet reaped) counts as gone: its sockets are already closed.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Collection
from typing import Final

import psutil

from portlease.records import DENIED, StartTime

__all__ = [
    "START_TIME_REUSE",
    "LivenessProbe",
    "listeners_by_port",
    "listeners_on",
    "process_name",
]

_LINUX: Final = sys.platform.startswith("linux") and os.path.exists("/proc/self/stat")
_POSIX: Final = os.name == "posix"


#: How long a start time read from the OS may be reused by later operations of one registry.
#: Within it a pid is only checked to exist (one ``kill(pid, 0)``): a death is still seen at
#: once, a pid reused by a new process within this window is seen when it expires (fail closed:
#: the record looks live a little longer, never dead too early).
START_TIME_REUSE: Final = 1.0


class LivenessProbe:
    """A ``records.ProcessProbe``: pid -> start time | ``None`` | ``DENIED``, memoised per instance.

    Args:
        own: ``(pid, start time)`` of the calling process when already known (skips a lookup).
        remembered: a dict owned by the caller (a ``Registry``) that carries start times from one
            operation to the next: pid -> (start time, ``time.monotonic()`` when read). Only
            used on POSIX, where ``kill(pid, 0)`` is a cheap existence check.
    """

    __slots__ = ("_btime", "_memo", "_remembered")

    def __init__(
        self,
        own: tuple[int, float] | None = None,
        remembered: dict[int, tuple[float, float]] | None = None,
    ) -> None:
        self._memo: dict[int, StartTime] = {}
        self._btime: float | None = None
        self._remembered = remembered if _POSIX else None
        if own is not None:
            self._memo[own[0]] = own[1]

    def __call__(self, pid: int) -> StartTime:
        try:
            return self._memo[pid]
        except KeyError:
            pass
        known, answer = self._recalled(pid)
        if not known:
            answer = self._linux(pid) if _LINUX else _psutil_start_time(pid)
            if self._remembered is not None and type(answer) is float:
                self._remembered[pid] = (answer, time.monotonic())
        self._memo[pid] = answer
        return answer

    def _recalled(self, pid: int) -> tuple[bool, StartTime]:
        """(True, answer) from a start time read less than START_TIME_REUSE ago, else (False, _)."""
        remembered = self._remembered
        entry = None if remembered is None else remembered.get(pid)
        if remembered is None or entry is None:
            return False, None
        if time.monotonic() - entry[1] >= START_TIME_REUSE:
            del remembered[pid]
            return False, None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            del remembered[pid]
            return True, None
        except OSError:
            pass  # EPERM: it exists
        return True, entry[0]

    def _linux(self, pid: int) -> StartTime:
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat:
                data = stat.read()
        except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
            return None
        except PermissionError:
            return DENIED
        except OSError:
            return DENIED  # unknown: fail closed
        try:
            fields = data[data.rindex(b")") + 2 :].split()
            state = fields[0]
            ticks = int(fields[19])
        except (ValueError, IndexError):
            return DENIED
        if state in (b"Z", b"X"):
            return None
        if self._btime is None:
            self._btime = _linux_boot_time()
            if self._btime is None:
                return _psutil_start_time(pid)
        return float(ticks) / _clock_ticks() + self._btime


def _clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def _linux_boot_time() -> float | None:
    try:
        with open("/proc/stat", "rb") as stat:
            for line in stat:
                if line.startswith(b"btime"):
                    return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _psutil_start_time(pid: int) -> StartTime:
    try:
        process = psutil.Process(pid)
        started = process.create_time()
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
    except psutil.NoSuchProcess:  # includes ZombieProcess
        return None
    except psutil.AccessDenied:
        return DENIED
    except (psutil.Error, OSError):
        return DENIED  # unknown: fail closed
    return started


def process_name(pid: int) -> str | None:
    """The process's name, or ``None`` when it is gone or hidden from us."""
    try:
        return psutil.Process(pid).name()
    except (psutil.Error, OSError):
        return None


def listeners_by_port(
    ports: Collection[int], *, named: int
) -> dict[int, list[tuple[int | None, str | None]]] | None:
    """Processes listening on each of ``ports`` (TCP, any address), from one look at the OS.

    One ``psutil.net_connections`` call whatever the number of ports (each call walks every
    socket of the machine: ~20 ms). Process names are looked up for at most ``named`` ports
    (those come first in ``ports``' order); the others' entries carry ``None`` names.
    Returns ``None`` when the OS refuses to list sockets at all (macOS without privileges).
    """
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, PermissionError):
        return None
    except (psutil.Error, OSError):
        return None
    wanted = set(ports)
    pids: dict[int, list[int | None]] = {}
    for conn in connections:
        if conn.status != psutil.CONN_LISTEN or not conn.laddr or conn.laddr.port not in wanted:
            continue
        pids.setdefault(conn.laddr.port, []).append(conn.pid)
    found: dict[int, list[tuple[int | None, str | None]]] = {}
    names_left = named
    for port in ports:
        if port not in pids or port in found:
            continue
        look = names_left > 0
        names_left -= 1
        found[port] = [
            (pid, process_name(pid) if look and pid is not None else None) for pid in pids[port]
        ]
    return found


def listeners_on(port: int) -> list[tuple[int | None, str | None]] | None:
    """Processes listening on TCP ``port`` (any address): ``[(pid, name), ...]``.

    A pid is ``None`` when the OS shows the socket but not its owner (another user's process).
    Returns ``None`` when the OS refuses to list sockets at all (macOS without privileges).
    """
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, PermissionError):
        return None
    except (psutil.Error, OSError):
        return None
    found: list[tuple[int | None, str | None]] = []
    for conn in connections:
        if conn.status != psutil.CONN_LISTEN or not conn.laddr or conn.laddr.port != port:
            continue
        pid = conn.pid
        found.append((pid, process_name(pid) if pid is not None else None))
    return found
