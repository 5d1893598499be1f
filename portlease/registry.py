"""The registry and its leases: lock, read-modify-replace of ``leases.json``, bind, hand-over.

This is the I/O layer. Every decision is taken by ``portlease.records`` (pure); this module
feeds it the file's contents, the processes' start times and the clock, and carries out its
answers.

Invariants:
    * Every change to ``leases.json`` is one read-modify-write under the lock on
      ``leases.json.lock``: read, prune stale leases and waiters, change, write a temporary file
      in the same directory, ``os.replace`` it over ``leases.json`` (mode 0600). No lost update;
      readers never see a half-written file. Nothing is rewritten when nothing changed.
    * The lock is held only for that read-modify-write (and, for a lease, the bind that proves
      it), never across a sleep, a wait for another lease, a fork or a spawn.
    * The bind is the proof, the record is the claim: a socket is bound and listening *before*
      its record is written, a record is removed only *after* its socket is closed, and every
      bind of a leased port happens under the lock. So under the lock, a port that a portlease
      process holds always has its record in the file.
    * ``leases.json`` is read with ``statefile.read_state_file``: never followed if a symlink,
      never blocked on (a FIFO), never read past ``MAX_LEASE_FILE`` bytes. Whatever cannot be
      read or parsed as a lease table (a FIFO, a directory, a link, a huge file, bad JSON) is
      renamed to ``leases.json.corrupt-<timestamp>-<random>`` (kept, never overwritten or
      deleted), a ``PortleaseWarning`` is emitted and logged, and the operation goes on with an
      empty table. A failure of the moment (EIO, no descriptors) is a ``RegistryError``.
    * The directory must be private wherever it came from (argument, ``$PORTLEASE_DIR``,
      default): a directory of this user that group and others cannot write
      (``statefile.check_private_directory``), else ``RegistryError``.
    * No module-level mutable state: everything lives on ``Registry`` and ``Lease`` instances.

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

import builtins
import errno
import logging
import math
import os
import secrets
import stat
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Final

import filelock

from portlease import _procs, _sockets
from portlease._lockfile import lock_file, unlock_file
from portlease.errors import (
    InvalidRequest,
    LeaseClosed,
    LeaseTimeout,
    PortBusy,
    PortleaseWarning,
    RegistryError,
)
from portlease.records import (
    DENIED,
    EncodedRecords,
    LeaseRecord,
    LeaseTable,
    ProcessProbe,
    TurnState,
    WaiterRecord,
    check_meta,
    check_owner,
    claimed_ports,
    decode_table,
    encode_table,
    fixed_port_turn,
    lease_is_stale,
    lease_url,
    loopback_address,
    next_ticket,
    pruned,
)
from portlease.statefile import (
    UnreadableStateFile,
    UnsafeDirectory,
    check_private_directory,
    keep_aside,
    read_state_file,
)

if TYPE_CHECKING:
    import socket

__all__ = ["LEASE_FILE", "LOCK_FILE", "Lease", "Registry", "default_directory"]

LEASE_FILE: Final = "leases.json"
LOCK_FILE: Final = "leases.json.lock"
_TEMP_FILE: Final = "leases.json.tmp"
#: Largest lease file read. 1,000 records are some 300 KB; a file past this is not one this
#: library wrote (or a registry gone wrong): it is kept aside instead of read into memory.
MAX_LEASE_FILE: Final = 4 * 1024 * 1024
#: For the temporary file: never follow a planted link; never block on a planted FIFO
#: (O_WRONLY on a FIFO without a reader blocks forever, holding the lock).
_TEMP_FLAGS: Final = (
    os.O_WRONLY
    | os.O_CREAT
    | os.O_TRUNC
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NOCTTY", 0)
)
#: What opening the temporary file says when something that is not a regular file is there.
_TEMP_NOT_A_FILE: Final = frozenset({errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.ENOTDIR})
_POSIX: Final = sys.platform != "win32"

#: How long an operation waits for the registry lock before ``RegistryError``. Generous: the
#: lock is held for a read-modify-write only, microseconds to milliseconds.
DEFAULT_LOCK_TIMEOUT: Final = 10.0
#: Bound on remembered start times of other processes (cleared past it).
_MAX_REMEMBERED: Final = 1024
#: Bound on kernel-chosen ports that a live record claims before giving up (port=0).
_MAX_PICKS: Final = 64
#: Polling while waiting for a fixed port: first sleep, growth, ceiling (seconds).
_POLL_FIRST: Final = 0.002
_POLL_GROWTH: Final = 1.5
_POLL_MAX: Final = 0.05

_log = logging.getLogger("portlease")

#: Builds the record for the port that was bound (the lease id and owner are fixed before).
_RecordFactory = Callable[[int], LeaseRecord]


def default_directory() -> Path:
    """The registry directory used when none is given.

    ``$PORTLEASE_DIR`` if set; else on Linux and other POSIX systems
    ``$XDG_RUNTIME_DIR/portlease`` (a per-user tmpfs), falling back to
    ``/dev/shm/portlease-<uid>`` (a tmpfs; checked like any shared parent), then
    ``<tempdir>/portlease-<uid>``; on macOS ``$TMPDIR/portlease`` (per-user there), falling back to
    ``~/Library/Caches/portlease``; on Windows ``%LOCALAPPDATA%\\portlease``.
    """
    explicit = os.environ.get("PORTLEASE_DIR")
    if explicit:
        return Path(explicit)
    if sys.platform == "win32":  # pragma: no cover - Windows only
        base = os.environ.get("LOCALAPPDATA")
        if base:
            return Path(base) / "portlease"
        user = os.environ.get("USERNAME") or "user"
        return Path(tempfile.gettempdir()) / f"portlease-{user}"
    if sys.platform == "darwin":  # pragma: no cover - macOS only
        tmpdir = os.environ.get("TMPDIR")
        if tmpdir:
            return Path(tmpdir) / "portlease"
        return Path.home() / "Library" / "Caches" / "portlease"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "portlease"
    # Without a runtime dir (containers, CI, ssh without logind) prefer the tmpfs in /dev/shm:
    # replacing a file over an existing one on ext4 costs ~1.2 ms (auto_da_alloc flushes the
    # new data), ~10x a whole lease on tmpfs, and the lease file needs no durability.
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK | os.X_OK):  # noqa: S108
        return Path("/dev/shm") / f"portlease-{os.getuid()}"  # noqa: S108
    return Path(tempfile.gettempdir()) / f"portlease-{os.getuid()}"


def _prepare_directory(path: Path, *, shared_parent: bool, from_env: bool) -> None:
    """Create ``path`` 0700 when missing; check it is a directory private to this user.

    Wherever the path came from, refuse a directory owned by someone else or one that group or
    others may write (anyone who can write there can swap the lease file). With
    ``shared_parent`` (a default location, possibly in a world-writable /tmp) also refuse a
    symlink in its place.

    Raises:
        RegistryError: it cannot be created, is not a directory, or is unsafe.
    """
    try:
        check_private_directory(path, create=True, follow_symlinks=not shared_parent)
    except UnsafeDirectory as exc:
        if shared_parent:
            hint = " (or set PORTLEASE_DIR to a private directory)"
        elif from_env:
            hint = " (it comes from $PORTLEASE_DIR: point that at a private directory)"
        else:
            hint = ""  # the caller chose it: the message says what to do
        raise RegistryError(f"unusable registry directory: {exc.message}{hint}", str(path)) from exc


class _Transaction:
    """One read-modify-write: the pruned table, the probe used for it, and whether to write."""

    __slots__ = ("dirty", "probe", "stale", "table")

    def __init__(
        self,
        table: LeaseTable,
        probe: ProcessProbe,
        stale: tuple[LeaseRecord, ...],
        *,
        dirty: bool,
    ) -> None:
        self.table = table
        self.probe = probe
        self.stale = stale
        self.dirty = dirty

    def set(self, table: LeaseTable) -> None:
        self.table = table
        self.dirty = True


class Registry:
    """A directory of leases: ``leases.json`` guarded by ``leases.json.lock``.

    Args:
        directory: where the lease file lives (str or path-like); created 0700 when missing.
            Default: ``default_directory()``.
        lock_timeout: seconds to wait for the registry lock before ``RegistryError``.

    Raises:
        RegistryError: the directory cannot be created or is not a safe directory.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    ) -> None:
        from_env = directory is None and bool(os.environ.get("PORTLEASE_DIR"))
        shared = directory is None and not from_env
        path = Path(directory) if directory is not None else default_directory()
        _prepare_directory(path, shared_parent=shared, from_env=from_env)
        self._directory = path
        self._lease_file = path / LEASE_FILE
        self._lock_timeout = lock_timeout
        # str paths: the hot path opens them several times per operation.
        self._lease_path = str(self._lease_file)
        self._lock_path = str(path / LOCK_FILE)
        self._temp_path = str(path / _TEMP_FILE)
        self._own: tuple[int, float] | None = None
        # Start times of other processes, reused for a second by later operations (see
        # _procs.START_TIME_REUSE): reading /proc for every pid in the file on every write
        # lengthens every lock hold.
        self._starts: dict[int, tuple[float, float]] = {}
        # Memo of the last file contents this instance read or wrote, and of its records' JSON.
        # Keyed by the full bytes, so it is exactly decode_table's answer for them; read and
        # written only while the lock is held. It spares re-parsing and re-encoding a large file
        # that only this instance has changed.
        self._memo_bytes: bytes | None = None
        self._memo_table = LeaseTable()
        self._memo_json: EncodedRecords = {}

    @property
    def directory(self) -> Path:
        """The registry directory."""
        return self._directory

    @property
    def lease_file(self) -> Path:
        """``<directory>/leases.json``."""
        return self._lease_file

    def __repr__(self) -> str:
        return f"Registry({str(self._directory)!r})"

    # --- public operations ----------------------------------------------------------------

    def acquire(
        self,
        owner: str,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        wait: float = 0.0,
        meta: Mapping[str, str] | None = None,
    ) -> Lease:
        """Bind a loopback port, listen on it, and record the lease.

        Args:
            owner: who holds the lease (free text shown by ``portlease ls``).
            port: 0 for any free port; N for exactly N.
            host: ``"127.0.0.1"`` (default), ``"::1"`` or ``"localhost"`` (binds 127.0.0.1).
            wait: for a fixed port held by another live lease, seconds to wait for it, in
                arrival order with other waiters; 0 gives up at once.
            meta: str -> str descriptions stored with the record; never secrets.

        Returns:
            A ``Lease`` whose socket is bound and listening; its record is in the file.

        Raises:
            InvalidHost: ``host`` is not one of the loopback spellings above.
            InvalidRequest: bad port, owner, wait or meta.
            PortBusy: the port cannot be bound and no live lease holds it (at once).
            LeaseTimeout: a live lease (or earlier waiters) kept the port for ``wait`` seconds.
            RegistryError: the lock timed out or the lease file cannot be written.
            After any failure nothing is bound and no record or waiter entry of this call
            remains.
        """
        recorded_host, address = loopback_address(host)
        if type(port) is not int or not 0 <= port <= 65535:
            raise InvalidRequest(
                f"port must be an int in 0..65535 (0: any free port), not {port!r}"
            )
        if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait < math.inf:
            raise InvalidRequest(f"wait must be a finite number of seconds >= 0, not {wait!r}")
        check_owner(owner)
        meta = check_meta(meta)
        lease_id = secrets.token_hex(8)
        pid, started = self._own_process()

        def record_for(bound_port: int) -> LeaseRecord:
            return LeaseRecord(
                id=lease_id,
                port=bound_port,
                host=recorded_host,
                owner=owner,
                pid=pid,
                pid_started=started,
                created=time.time(),
                meta=meta,
            )

        if port == 0:
            return self._acquire_any(address, record_for)
        return self._acquire_fixed(address, port, float(wait), lease_id, record_for)

    def list(self, *, stale: bool = False) -> builtins.list[LeaseRecord]:
        """The leases in the file, sorted by port: live ones, or all with ``stale=True``.

        Reads under the lock and writes nothing (unless the file had to be moved aside).
        """
        with self._locked() as table:
            probe = self._probe()
            records = [r for r in table.leases if stale or not lease_is_stale(r, probe)]
        return sorted(records, key=lambda r: (r.port, r.created))

    def list_states(self) -> builtins.list[tuple[LeaseRecord, bool]]:
        """Every lease paired with whether it is stale, sorted by port (``portlease ls``).

        Reads under the lock and writes nothing (unless the file had to be moved aside).
        """
        with self._locked() as table:
            probe = self._probe()
            rows = [(r, lease_is_stale(r, probe)) for r in table.leases]
        return sorted(rows, key=lambda row: (row[0].port, row[0].created))

    def prune(self) -> builtins.list[LeaseRecord]:
        """Remove stale leases (and dead waiters) under the lock; return the removed leases."""
        with self._transaction() as txn:
            removed = txn.stale
        return sorted(removed, key=lambda r: (r.port, r.created))

    # --- acquire paths --------------------------------------------------------------------

    def _acquire_any(self, address: str, record_for: _RecordFactory) -> Lease:
        sock: socket.socket | None = None
        try:
            with self._transaction() as txn:
                sock = self._bind_unclaimed(address, claimed_ports(txn.table))
                record = record_for(sock.getsockname()[1])
                txn.set(txn.table.with_lease(record))
            return Lease(self, record, sock)
        except BaseException:
            if sock is not None:
                sock.close()
            raise

    @staticmethod
    def _bind_unclaimed(address: str, claimed: frozenset[int]) -> socket.socket:
        skipped: builtins.list[socket.socket] = []
        try:
            for _ in range(_MAX_PICKS):
                try:
                    sock = _sockets.open_listener(address, 0)
                except OSError as exc:
                    raise PortBusy(0, host=address, detail=str(exc)) from exc
                if sock.getsockname()[1] not in claimed:
                    return sock
                skipped.append(sock)  # keep it bound so the kernel offers another port
            raise PortBusy(
                0,
                host=address,
                detail=f"the kernel offered {_MAX_PICKS} ports in a row that live leases claim",
            )
        finally:
            for extra in skipped:
                extra.close()

    def _acquire_fixed(
        self,
        address: str,
        port: int,
        wait: float,
        lease_id: str,
        record_for: _RecordFactory,
    ) -> Lease:
        start = time.monotonic()
        deadline = start + wait
        queued = False
        sleep = _POLL_FIRST
        sock: socket.socket | None = None
        record: LeaseRecord | None = None
        try:
            while True:
                failure: OSError | None = None
                timeout: LeaseTimeout | None = None
                with self._transaction() as txn:
                    turn = fixed_port_turn(txn.table, port, lease_id)
                    if turn.state is TurnState.TAKE:
                        table = txn.table.without_waiter(lease_id)
                        try:
                            sock = _sockets.open_listener(address, port)
                        except OSError as exc:
                            failure = exc
                            if queued:
                                txn.set(table)
                                queued = False
                        else:
                            record = record_for(port)
                            txn.set(table.with_lease(record))
                    elif time.monotonic() >= deadline:
                        timeout = LeaseTimeout(port, turn.holder, time.monotonic() - start)
                        if queued:
                            txn.set(txn.table.without_waiter(lease_id))
                            queued = False
                    elif txn.table.waiter(lease_id) is None:
                        pid, started = self._own_process()
                        now = time.time()
                        waiter = WaiterRecord(
                            id=lease_id,
                            port=port,
                            pid=pid,
                            pid_started=started,
                            ticket=next_ticket(txn.table),
                            created=now,
                            deadline=now + max(deadline - time.monotonic(), 0.0),
                        )
                        txn.set(txn.table.with_waiter(waiter))
                        queued = True
                if sock is not None and record is not None:
                    return Lease(self, record, sock)
                if failure is not None:
                    raise _port_busy(port, address, failure) from failure
                if timeout is not None:
                    raise timeout
                time.sleep(min(sleep, max(deadline - time.monotonic(), 0.0)))
                sleep = min(sleep * _POLL_GROWTH, _POLL_MAX)
        except BaseException:
            if sock is not None:
                sock.close()
            if queued:
                self._forget_waiter(lease_id)
            raise

    def _forget_waiter(self, waiter_id: str) -> None:
        try:
            with self._transaction() as txn:
                if txn.table.waiter(waiter_id) is not None:
                    txn.set(txn.table.without_waiter(waiter_id))
        except Exception as exc:  # best effort: the entry expires with its deadline anyway
            _log.debug("could not remove waiter %s: %s", waiter_id, exc)

    # --- used by Lease ----------------------------------------------------------------------

    def _hand_over(self, lease_id: str, pid: int) -> LeaseRecord:
        if type(pid) is not int or pid <= 0:
            raise InvalidRequest(f"pid must be a positive int, not {pid!r}")
        with self._transaction() as txn:
            record = txn.table.lease(lease_id)
            if record is None:
                raise RegistryError(
                    f"lease {lease_id} is no longer in {self._lease_file}; cannot hand it over",
                    str(self._lease_file),
                )
            started = txn.probe(pid)
            if started is None:
                raise RegistryError(
                    f"cannot hand lease {lease_id} over to pid {pid}: no such process"
                )
            updated = replace(
                record,
                server_pid=pid,
                server_started=None if started == DENIED else started,
            )
            txn.set(txn.table.with_lease(updated))
        return updated

    def _remove(self, lease_id: str) -> None:
        with self._transaction() as txn:
            if txn.table.lease(lease_id) is not None:
                txn.set(txn.table.without_lease(lease_id))

    # --- file handling ----------------------------------------------------------------------

    def _own_process(self) -> tuple[int, float]:
        pid = os.getpid()
        own = self._own
        if own is None or own[0] != pid:  # first use, or we are a forked child
            started = _procs.LivenessProbe()(pid)
            if started is None or started == DENIED:  # pragma: no cover - we do exist
                raise RegistryError(f"cannot read this process's own start time (pid {pid})")
            own = self._own = (pid, started)
        return own

    def _probe(self) -> _procs.LivenessProbe:
        """A fresh probe (memo for one operation only), knowing this process's start time."""
        if len(self._starts) > _MAX_REMEMBERED:  # entries only expire when looked up again
            self._starts.clear()
        return _procs.LivenessProbe(self._own_process(), self._starts)

    @contextmanager
    def _locked(self) -> Iterator[LeaseTable]:
        """Hold the lock and yield the table as read (a corrupt file is moved aside first)."""
        try:
            fd = lock_file(self._lock_path, self._lock_timeout)
        except filelock.Timeout as exc:
            raise RegistryError(
                f"timed out after {self._lock_timeout:g} s waiting for the registry lock "
                f"{self._lock_path}; another process holds it",
                self._lock_path,
            ) from exc
        except OSError as exc:
            raise RegistryError(
                f"cannot open the registry lock {self._lock_path}: {exc.strerror or exc}",
                self._lock_path,
            ) from exc
        try:
            yield self._read()
        finally:
            unlock_file(fd)

    @contextmanager
    def _transaction(self) -> Iterator[_Transaction]:
        """Hold the lock, yield the pruned table; write it back if it changed and no error."""
        with self._locked() as table:
            probe = self._probe()
            result = pruned(table, probe, time.time())
            txn = _Transaction(result.table, probe, result.stale_leases, dirty=result.changed)
            yield txn
            if txn.dirty:
                self._write(txn.table)

    def _read(self) -> LeaseTable:
        try:
            data = read_state_file(self._lease_path, limit=MAX_LEASE_FILE)
        except UnreadableStateFile as exc:
            self._move_aside(self._lease_path, exc.reason)
            return LeaseTable()
        except OSError as exc:
            raise RegistryError(
                f"cannot read {self._lease_path}: {exc.strerror or exc}", self._lease_path
            ) from exc
        if data is None:
            return LeaseTable()
        if data == self._memo_bytes:
            return self._memo_table
        try:
            table = decode_table(data)
        except ValueError as exc:
            self._move_aside(self._lease_path, str(exc))
            return LeaseTable()
        self._memo_bytes, self._memo_table = data, table
        self._memo_json.clear()
        return table

    def _move_aside(self, path: str, reason: str) -> None:
        """Keep ``path`` (the lease file or the temporary file) aside; warn. Under the lock."""
        try:
            aside = keep_aside(path)
        except OSError as exc:
            raise RegistryError(
                f"{path} is unusable ({reason}) and cannot be moved aside: "
                f"{exc.strerror or exc}; move it away by hand",
                path,
            ) from exc
        if path == self._lease_path:
            message = (
                f"lease file {path} could not be parsed ({reason}); moved it aside to "
                f"{aside} and started an empty lease table"
            )
        else:
            message = f"{path} was in the way ({reason}); moved it aside to {aside}"
        _log.warning("%s", message)
        warnings.warn(message, PortleaseWarning, stacklevel=2)

    def _open_temp(self) -> int:
        """Open the temporary file for writing; keep aside (once) whatever blocks the name."""
        temp = self._temp_path
        for attempt in range(2):
            try:
                fd = os.open(temp, _TEMP_FLAGS, 0o600)
            except OSError as exc:
                if attempt or exc.errno not in _TEMP_NOT_A_FILE:
                    raise
                self._move_aside(temp, exc.strerror or str(exc))
                continue
            mode = os.fstat(fd).st_mode
            if stat.S_ISREG(mode):
                return fd
            os.close(fd)  # a FIFO someone reads, a device: not ours to write into
            if attempt:
                break
            self._move_aside(temp, "not a regular file")
        raise OSError(errno.EEXIST, f"{temp} is not a regular file")

    def _write(self, table: LeaseTable) -> None:
        memo = self._memo_json
        data = encode_table(table, memo)
        temp = self._temp_path
        try:
            fd = self._open_temp()
            try:
                if _POSIX:
                    os.fchmod(fd, 0o600)  # a leftover temp file may have other bits
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            os.replace(temp, self._lease_path)
        except OSError as exc:
            self._memo_bytes = None
            with suppress(OSError):
                os.unlink(temp)
            raise RegistryError(
                f"cannot write {self._lease_path}: {exc.strerror or exc}", self._lease_path
            ) from exc
        self._memo_bytes, self._memo_table = data, table


def _port_busy(port: int, address: str, exc: OSError) -> PortBusy:
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


class Lease:
    """A leased loopback port: a bound, listening socket and its record in the registry.

    Only ``Registry.acquire`` creates leases. Use it as a context manager, or call
    ``release()``. After release the lease refuses reuse: ``socket``, ``hand_over`` and
    ``with`` raise ``LeaseClosed``; ``port``, ``host``, ``id``, ``record`` and ``url()`` still
    answer. A lease dropped without release is released by the garbage collector with a
    ``ResourceWarning`` (only in the process that acquired it, never in a forked child).
    """

    def __init__(self, registry: Registry, record: LeaseRecord, sock: socket.socket) -> None:
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
    def registry(self) -> Registry:
        """The registry this lease is recorded in."""
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
