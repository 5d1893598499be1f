"""Naming a foreign holder: turning a failed bind of a fixed port into ``PortBusy``. I/O.

A foreign holder is a process that has a port bound without a lease in the registry: nothing in
portlease will free the port, so the caller is told at once, and told who it is when the OS
says.

Invariants:
    * ``port_busy`` always returns a ``PortBusy`` (it never raises): when the OS does not show
      the listener (another user's process, macOS without privileges), the error says so
      instead of naming one.
    * Only the first listener the OS names is reported; the pid and name are what the OS said a
      moment after the bind failed, not a guarantee that this process still holds the port.
    * ``set_busy`` (a whole port set refused) asks the OS once, whatever the size of the set,
      and its message stays short: the number of ports, their range and the first
      ``SHOWN_HOLDERS`` holders (a set may name 1,024 ports).
"""

from __future__ import annotations

import errno
from collections.abc import Mapping, Sequence
from typing import Final

from portlease import _procs
from portlease.errors import PortBusy

__all__ = ["SHOWN_HOLDERS", "port_busy", "set_busy"]

#: How many ports of a refused set the message names with their holders.
SHOWN_HOLDERS: Final = 3


def port_busy(port: int, address: str, exc: OSError) -> PortBusy:
    """Turn a failed bind of a fixed port into ``PortBusy``, naming the listener if the OS tells."""
    if exc.errno != errno.EADDRINUSE:
        return PortBusy(port, host=address, detail=exc.strerror or str(exc))
    found = _procs.listeners_on(port)
    if found is None:
        return PortBusy(port, host=address, detail="the OS does not show who listens on it")
    named = [entry for entry in found if entry[0] is not None]
    if named:
        pid, name = named[0]
        return PortBusy(port, pid, name, host=address)
    if found:
        return PortBusy(port, host=address)
    return PortBusy(
        port,
        host=address,
        detail="address in use, but no process listens on it (a socket bound without listening?)",
    )


def set_busy(ports: Sequence[int], address: str, failures: Mapping[int, OSError]) -> PortBusy:
    """``PortBusy`` for a port set whose every port failed to bind (``failures``: port -> error).

    ``port`` is the first port of the set in trying order; the message gives the count, the
    range and the holders of the first ``SHOWN_HOLDERS`` ports, from one look at the OS.
    """
    failed = [p for p in ports if p in failures]
    if len(failed) == 1:
        return port_busy(failed[0], address, failures[failed[0]])
    in_use = [p for p in failed if failures[p].errno == errno.EADDRINUSE]
    found = _procs.listeners_by_port(in_use, named=SHOWN_HOLDERS) if in_use else {}
    shown: list[str] = []
    for port in failed[:SHOWN_HOLDERS]:
        exc = failures[port]
        if exc.errno != errno.EADDRINUSE:
            shown.append(f"{port}: {exc.strerror or exc}")
            continue
        listeners = None if found is None else found.get(port)
        named = [entry for entry in listeners or () if entry[0] is not None]
        if named:
            pid, name = named[0]
            shown.append(f"{port}: pid {pid} ({name or 'name unknown'})")
        else:
            shown.append(f"{port}: a process the OS did not name")
    more = len(failed) - len(shown)
    listed = "; ".join(shown) + (f"; and {more} more" if more else "")
    return PortBusy(
        failed[0],
        host=address,
        detail=f"nor can any other of the {len(failed)} ports asked for "
        f"({min(failed)}-{max(failed)}): each is bound by a process without a lease ({listed})",
    )
