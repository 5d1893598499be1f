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
"""

from __future__ import annotations

import errno

from portlease import _procs
from portlease.errors import PortBusy

__all__ = ["port_busy"]


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
