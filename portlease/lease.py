"""``Lease``: one leased port as its holder sees it: the socket, the record, the release. I/O.

Only ``Registry.acquire`` creates a ``Lease``; every change to its record goes through the
registry's lease-file transaction (``Registry._hand_over``, ``Registry._remove``).

Invariants:
    * A lease is released at most once (``release`` is idempotent and thread-safe); after it,
      ``socket``, ``hand_over`` and ``with`` raise ``LeaseClosed`` while ``port``, ``host``,
      ``id``, ``record`` and ``url()`` still answer.
    * ``release`` closes this process's copy of the socket *before* the record is removed, so
      a port whose record is gone is no longer bound by this process.
    * The garbage collector releases a forgotten lease (with a ``ResourceWarning``) only in the
      process that acquired it, never in a forked child that inherited the object.

Who releases what:
    * The process that called ``acquire`` owns the lease and releases it (``release()``, the
      ``with`` block, or, with a ``ResourceWarning``, the garbage collector). ``release`` closes
      that process's socket and removes the record.
    * After ``hand_over(pid)`` the record names the server process too and stays live while
      either process lives. The owner should call ``release()`` only after the server exited
      (the runner reaps its child first); if the owner dies first, the record goes stale when
      the server dies too and the next write prunes it. ``close_socket()`` drops the owner's copy
      of the socket and keeps the record.
"""

from __future__ import annotations

import os
import threading
import warnings
from contextlib import suppress
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

from portlease.errors import LeaseClosed
from portlease.records import LeaseRecord, lease_url

if TYPE_CHECKING:
    import socket


class LeaseBook(Protocol):
    """Where a lease's record is kept and changed: its ``Registry`` (which is one)."""

    def _hand_over(self, lease_id: str, pid: int) -> LeaseRecord: ...
    def _remove(self, lease_id: str) -> None: ...


__all__ = ["Lease"]


class Lease:
    """A leased loopback port: a bound, listening socket and its record in the registry.

    Only ``Registry.acquire`` creates leases. Use it as a context manager, or call
    ``release()``. After release the lease refuses reuse: ``socket``, ``hand_over`` and
    ``with`` raise ``LeaseClosed``; ``port``, ``host``, ``id``, ``record`` and ``url()`` still
    answer. A lease dropped without release is released by the garbage collector with a
    ``ResourceWarning`` (only in the process that acquired it, never in a forked child).
    """

    def __init__(self, registry: LeaseBook, record: LeaseRecord, sock: socket.socket) -> None:
        self._creator = os.getpid()
        self._registry = registry
        self._record = record
        self._socket: socket.socket | None = sock
        self._released = False
        self._state = threading.Lock()

    # --- facts --------------------------------------------------------------------------------

    @property
    def id(self) -> str:
        """The lease's unique id (as in its record)."""
        return self._record.id

    @property
    def port(self) -> int:
        """The leased port."""
        return self._record.port

    @property
    def host(self) -> str:
        """The host as recorded: ``"127.0.0.1"``, ``"::1"`` or ``"localhost"``."""
        return self._record.host

    @property
    def record(self) -> LeaseRecord:
        """The record as last written by this lease (after ``hand_over``: with the server)."""
        return self._record

    @property
    def registry(self) -> LeaseBook:
        """The registry this lease is recorded in (the ``Registry`` that acquired it)."""
        return self._registry

    @property
    def released(self) -> bool:
        """Whether ``release()`` has run."""
        return self._released

    @property
    def socket(self) -> socket.socket:
        """The bound, listening socket (not inheritable).

        Raises:
            LeaseClosed: the lease was released, or ``close_socket()`` dropped the socket.
        """
        sock = self._socket
        if sock is None:
            raise LeaseClosed(self._closed_message())
        return sock

    def url(self, path: str = "/") -> str:
        """``http://HOST:PORT/path``; IPv6 in brackets (``http://[::1]:PORT/path``)."""
        return lease_url(self._record.host, self._record.port, path)

    # --- changes ------------------------------------------------------------------------------

    def hand_over(self, pid: int) -> None:
        """Record ``pid`` (with its start time) as the process now serving the port.

        Call it after spawning a child that inherited the socket. The record then stays live
        while the owner or the server lives. Then ``close_socket()`` to drop the owner's copy.

        Raises:
            LeaseClosed: the lease was released.
            RegistryError: the pid does not exist, or the record vanished; the record is unchanged.
        """
        if self._released:
            raise LeaseClosed(self._closed_message())
        self._record = self._registry._hand_over(self._record.id, pid)

    def close_socket(self) -> None:
        """Close this process's copy of the socket; the record stays. Idempotent."""
        with self._state:
            sock, self._socket = self._socket, None
        if sock is not None:
            sock.close()

    def release(self) -> None:
        """Close the socket if still open and remove the record if it is still ours. Idempotent.

        Raises:
            RegistryError: the record could not be removed (lock timeout, unwritable file). The
                socket is closed and the lease counts as released anyway; its record goes stale
                when this process exits.
        """
        with self._state:
            if self._released:
                return
            self._released = True
            sock, self._socket = self._socket, None
        try:
            if sock is not None:
                sock.close()
        finally:
            self._registry._remove(self._record.id)

    def __enter__(self) -> Lease:
        if self._released:
            raise LeaseClosed(self._closed_message())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __del__(self) -> None:
        if getattr(self, "_released", True) or getattr(self, "_creator", None) != os.getpid():
            return
        with suppress(Exception):  # a finalizer has nobody to report to but the warning
            self.release()
        warnings.warn(
            f"lease {self._record.id} on port {self._record.port} ({self._record.owner!r}) was "
            "never released; released it at garbage collection",
            ResourceWarning,
            stacklevel=2,
            source=self,
        )

    def __repr__(self) -> str:
        state = "released" if self._released else "open" if self._socket else "socket closed"
        return f"<Lease {self._record.id} {self.url('')} owner={self._record.owner!r} {state}>"

    def _closed_message(self) -> str:
        if self._released:
            return (
                f"lease {self._record.id} for port {self._record.port} was released; "
                "acquire a new lease"
            )
        return (
            f"the socket of lease {self._record.id} for port {self._record.port} was closed by "
            "close_socket(); the serving process holds its own copy"
        )
