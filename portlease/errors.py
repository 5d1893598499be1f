"""Errors and the warning category of portlease.

Every exception that portlease raises on purpose derives from one root::

    PortleaseError                  (Exception)
     ├── PortBusy                   the port is bound by a process that holds no lease
     ├── LeaseTimeout               (also TimeoutError) a live lease kept the port past ``wait``
     ├── InvalidRequest             (also ValueError) unusable acquire() arguments or record fields
     │    └── InvalidHost           a host that is not a loopback spelling portlease accepts
     ├── LeaseClosed                a released lease (or its closed socket) was used
     └── RegistryError              the directory, lock or lease file cannot be used

    PortleaseWarning                (UserWarning) an unusable lease file was moved aside

Invariants:
    * Pure: no I/O here. Every class pickles (``__reduce__`` passes the constructor arguments),
      so an error can cross a process boundary unchanged.
    * ``str(err)`` is a sentence a person can act on; the structured fields are attributes.
"""

from __future__ import annotations

from typing import Any, Protocol


class HolderRecord(Protocol):
    """What an error says of the lease record holding a port (``LeaseRecord`` is one)."""

    @property
    def id(self) -> str: ...
    @property
    def owner(self) -> str: ...
    @property
    def pid(self) -> int: ...
    @property
    def server_pid(self) -> int | None: ...


__all__ = [
    "InvalidHost",
    "InvalidRequest",
    "LeaseClosed",
    "LeaseTimeout",
    "PortBusy",
    "PortleaseError",
    "PortleaseWarning",
    "RegistryError",
]


class PortleaseError(Exception):
    """Root of every error portlease raises on purpose.

    Raised when: never directly for a lease problem; catch it to handle all of them at once.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message,))

    def __str__(self) -> str:
        return self.message


class PortBusy(PortleaseError):
    """The requested port cannot be bound and no live lease explains why.

    Raised when: ``acquire(port=N)`` fails to bind N (another process listens on it without a
    lease, or the OS refuses the port) while no live lease in the registry claims N. Raised at
    once, without waiting: nothing in portlease will free the port.

    Attributes:
        port: the port that was asked for.
        pid: the process listening on it, when the OS tells (else ``None``).
        process_name: that process's name, when the OS tells (else ``None``).
        host: the loopback host that was asked for.
    """

    def __init__(
        self,
        port: int,
        pid: int | None = None,
        process_name: str | None = None,
        host: str = "127.0.0.1",
        detail: str | None = None,
    ) -> None:
        self.port = port
        self.pid = pid
        self.process_name = process_name
        self.host = host
        self.detail = detail
        if pid is not None:
            why = f"is in use by pid {pid} ({process_name or 'name unknown'}), which holds no lease"
        elif detail:
            why = f"cannot be bound: {detail}"
        else:
            why = (
                "is in use by a process the OS did not name (hidden from this user), "
                "which holds no lease"
            )
        super().__init__(
            f"port {port} on {host} {why}; stop that process or ask for another port "
            "(port=0 picks a free one)"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.port, self.pid, self.process_name, self.host, self.detail))


class LeaseTimeout(PortleaseError, TimeoutError):
    """A fixed port stayed taken for the whole ``wait``.

    Raised when: ``acquire(port=N, wait=w)`` finds N held by another live lease, or earlier live
    waiters queued for N, and that is still so after ``w`` seconds (at once when ``w == 0``).
    Our own place in the waiter queue is removed before this is raised.

    Attributes:
        port: the port that was asked for.
        holder: the live lease record holding the port at the deadline, or ``None`` when the port
            was free but earlier waiters were queued for it.
        waited: seconds spent waiting.
    """

    def __init__(self, port: int, holder: HolderRecord | None = None, waited: float = 0.0) -> None:
        self.port = port
        self.holder = holder
        self.waited = waited
        if holder is not None:
            server = f", served by pid {holder.server_pid}" if holder.server_pid is not None else ""
            who = f"held by lease {holder.id} of {holder.owner!r} (pid {holder.pid}{server})"
        else:
            who = "free, but earlier waiters are queued for it"
        super().__init__(
            f"port {port} is {who}; gave up after waiting {waited:.3g} s "
            "(pass a larger wait=, or port=0 for any free port)"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.port, self.holder, self.waited))


class InvalidRequest(PortleaseError, ValueError):
    """An argument to ``acquire`` or a field of a ``LeaseRecord`` is unusable.

    Raised when: the port is outside 0..65535, the owner is empty or not printable, ``meta`` is
    not a mapping of str to str, ``wait`` is negative or not finite, or a record field has the
    wrong type. Nothing was bound or written.
    """


class InvalidHost(InvalidRequest):
    """The host is not a loopback address portlease binds.

    Raised when: ``acquire(host=...)`` is given anything but ``"127.0.0.1"``, ``"::1"`` (or
    ``"[::1]"``) or ``"localhost"``. A redirect listener must never be reachable from the
    network (RFC 8252 section 8.3). Nothing was bound or written.

    Attributes:
        host: the host that was refused.
    """

    def __init__(self, host: str) -> None:
        self.host = host
        super().__init__(
            f"host {host!r} is not a loopback address portlease will bind; use '127.0.0.1' "
            "(the default), '::1' or 'localhost' (RFC 8252 section 8.3)"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.host,))


class LeaseClosed(PortleaseError):
    """A lease was used after ``release()``, or its socket after ``close_socket()``.

    Raised when: ``lease.socket`` is read after the lease was released or after the holder
    dropped its copy of the socket, or ``hand_over`` / ``with lease`` is used on a released
    lease. A released lease cannot be reused: acquire a new one.
    """


class RegistryError(PortleaseError):
    """The registry cannot do its work.

    Raised when: the registry directory cannot be created or is unsafe (not a directory, not
    ours, group/world writable), the lock cannot be taken within its timeout (the lock error is
    chained as ``__cause__``) or its file cannot be opened (a directory in its place, say: the
    message says what is there), the lease file cannot be read or replaced, or an operation's
    own record has vanished from the file. The lease file is left as it was before the
    operation.

    Attributes:
        path: the file or directory involved, when there is one.
    """

    def __init__(self, message: str, path: str | None = None) -> None:
        self.path = path
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message, self.path))


class PortleaseWarning(UserWarning):
    """Something was repaired, not refused: a file in the registry's way was moved aside.

    Emitted (with ``warnings.warn`` and logged on the ``portlease`` logger) when whatever stands
    where the lease file should be cannot be used as one: garbage, truncated or nested too deep
    JSON, an unknown version, fields of the wrong type, or not a regular file of at most
    ``MAX_LEASE_FILE`` bytes at all (a FIFO, a directory, a symlink, an oversized or sparse
    file). It is kept as ``leases.json.corrupt-<timestamp>-<random>`` (never deleted or
    overwritten) and work goes on with an empty table. Also emitted when something that is not
    a regular file blocks the temporary file ``leases.json.tmp`` (kept aside the same way).

    Never emitted for the lock file ``leases.json.lock``: that is never moved aside (another
    process may hold the lock on it); something unusable there is a ``RegistryError``.
    """
