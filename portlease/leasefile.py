"""The lease file's transaction: lock, read, prune, change, replace ``leases.json``. I/O.

``LeaseFile`` is the one way anything reads or writes ``<directory>/leases.json``. It knows the
file, the lock and the temporary file; it decides nothing about leases (``portlease.records``
does, and ``portlease.registry`` says what to change).

Invariants:
    * Every change to ``leases.json`` is one read-modify-write under the lock on
      ``leases.json.lock`` (``transaction``): read, prune stale leases and waiters, change, write
      a temporary file in the same directory, ``os.replace`` it over ``leases.json`` (mode
      0600). No lost update; readers never see a half-written file. Nothing is rewritten when
      nothing changed, and nothing is written when the change raised.
    * ``leases.json`` is read with ``statefile.read_state_file``: never followed if a symlink,
      never blocked on (a FIFO), never read past ``MAX_LEASE_FILE`` bytes. Whatever cannot be
      read or parsed as a lease table (a FIFO, a directory, a link, a huge file, bad JSON) is
      renamed to ``leases.json.corrupt-<timestamp>-<random>`` (kept, never overwritten or
      deleted), a ``PortleaseWarning`` is emitted and logged, and the operation goes on with an
      empty table. The temporary file is treated the same way when something else stands in
      its place. A failure of the moment (EIO, no descriptors, a full disk) is a
      ``RegistryError`` and moves nothing.
    * The lock file is never moved aside or removed, whatever stands there: another process may
      hold the lock on it. A lock that cannot be opened is a ``RegistryError`` saying what is
      there and what to do.
    * The memo (the last bytes this instance read or wrote, their table and their records'
      JSON) is read and written only under the lock, and keyed by the full bytes: it is always
      exactly ``decode_table``'s answer for them.
    * ``peek`` reads without the lock and never writes, moves aside or changes the memo: a
      waiter looks at the file as often as it likes without holding up anyone's lock.

Not guaranteed: the lock is advisory (``flock``); a process that ignores it can still change the
file, and is then only seen, at the next read, as whatever it wrote.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Final

import filelock

from portlease.errors import PortleaseWarning, RegistryError
from portlease.records import (
    EncodedRecords,
    LeaseRecord,
    LeaseTable,
    ProcessProbe,
    decode_table,
    encode_table,
    pruned,
)
from statefiles import UnreadableStateFile, keep_aside, lock_file, read_state_file, unlock_file

__all__ = [
    "DEFAULT_LOCK_TIMEOUT",
    "LEASE_FILE",
    "LOCK_FILE",
    "MAX_LEASE_FILE",
    "LeaseFile",
    "Transaction",
]

LEASE_FILE: Final = "leases.json"
LOCK_FILE: Final = "leases.json.lock"
_TEMP_FILE: Final = "leases.json.tmp"
#: Largest lease file read. 1,000 records are some 300 KB; a file past this is not one this
#: library wrote (or a registry gone wrong): it is kept aside instead of read into memory.
MAX_LEASE_FILE: Final = 4 * 1024 * 1024
#: How long an operation waits for the registry lock before ``RegistryError``. Generous: the
#: lock is held for a read-modify-write only, microseconds to milliseconds.
DEFAULT_LOCK_TIMEOUT: Final = 10.0
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

_log = logging.getLogger("portlease")


class Transaction:
    """One read-modify-write: the pruned table, the probe used for it, and whether to write.

    Change the table only through ``set``; ``stale`` holds the leases pruned on the way in.
    """

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
        """Make ``table`` the one written back at the end of the transaction."""
        self.table = table
        self.dirty = True


class LeaseFile:
    """``<directory>/leases.json`` guarded by ``<directory>/leases.json.lock``.

    Args:
        directory: a directory already checked to be private (``location.registry_directory``).
        lock_timeout: seconds to wait for the lock before ``RegistryError``.
    """

    def __init__(self, directory: Path, lock_timeout: float) -> None:
        self._path = directory / LEASE_FILE
        self._lock_timeout = lock_timeout
        # str paths: the hot path opens them several times per operation.
        self._lease_path = str(self._path)
        self._lock_path = str(directory / LOCK_FILE)
        self._temp_path = str(directory / _TEMP_FILE)
        # Memo of the last file contents this instance read or wrote, and of its records' JSON.
        # Keyed by the full bytes, so it is exactly decode_table's answer for them; read and
        # written only while the lock is held. It spares re-parsing and re-encoding a large file
        # that only this instance has changed.
        self._memo_bytes: bytes | None = None
        self._memo_table = LeaseTable()
        self._memo_json: EncodedRecords = {}
        # What ``peek`` last decoded ((inode, mtime, size), bytes, table), for waiters that
        # look without the lock.
        self._peeked: tuple[tuple[int, int, int], bytes, LeaseTable] | None = None

    @property
    def path(self) -> Path:
        """``<directory>/leases.json``."""
        return self._path

    @contextmanager
    def locked(self) -> Iterator[LeaseTable]:
        """Hold the lock and yield the table as read (a corrupt file is moved aside first).

        Writes nothing (unless the file had to be moved aside).

        Raises:
            RegistryError: the lock timed out or cannot be opened, or the file cannot be read.
        """
        try:
            fd = lock_file(self._lock_path, self._lock_timeout)
        except filelock.Timeout as exc:
            raise RegistryError(
                f"timed out after {self._lock_timeout:g} s waiting for the registry lock "
                f"{self._lock_path}; another process holds it",
                self._lock_path,
            ) from exc
        except OSError as exc:
            raise _unusable_lock(self._lock_path, exc) from exc
        try:
            yield self._read()
        finally:
            unlock_file(fd)

    @contextmanager
    def transaction(self, new_probe: Callable[[], ProcessProbe]) -> Iterator[Transaction]:
        """Hold the lock, yield the pruned table; write it back if it changed and no error.

        ``new_probe`` is called once, under the lock, for the liveness answers of this
        transaction (pruning and whatever the caller asks ``Transaction.probe``).

        Raises:
            RegistryError: as ``locked``, or the file cannot be written (it is then unchanged).
        """
        with self.locked() as table:
            probe = new_probe()
            result = pruned(table, probe, time.time())
            txn = Transaction(result.table, probe, result.stale_leases, dirty=result.changed)
            yield txn
            if txn.dirty:
                self._write(txn.table)

    def peek(self) -> LeaseTable | None:
        """The table as last replaced, read WITHOUT the lock; ``None`` when it cannot be read.

        ``leases.json`` is only ever replaced whole (``os.replace``), so this is one complete
        version, possibly outdated the moment it returns: use it only to decide whether a
        locked round is worth taking, never to change anything. Writes nothing, moves nothing
        aside, and touches neither the memo nor the lock (it cannot delay a lock holder).
        A file with the inode, modification time and size of the last one peeked is taken to
        be that version unread: a reused inode with the same time and size could hide one
        change from a waiter until its next locked round (``registry._SET_LOCKED_EVERY``).
        """
        try:
            info = os.stat(self._lease_path, follow_symlinks=False)
        except FileNotFoundError:
            return LeaseTable()
        except OSError:
            return None
        # Every write replaces the file (a new inode, a new mtime): the same identity is the
        # same version, so thirty idle waiters cost a stat each per poll, not a read.
        key = (info.st_ino, info.st_mtime_ns, info.st_size)
        peeked = self._peeked  # one tuple: read and replaced atomically, whatever the thread
        if peeked is not None and peeked[0] == key:
            return peeked[2]
        try:
            data = read_state_file(self._lease_path, limit=MAX_LEASE_FILE)
        except (UnreadableStateFile, OSError):
            return None
        if data is None:
            return LeaseTable()
        if peeked is not None and peeked[1] == data:
            self._peeked = (key, data, peeked[2])
            return peeked[2]
        try:
            table = decode_table(data)
        except ValueError:
            return None
        self._peeked = (key, data, table)
        return table

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


def _unusable_lock(path: str, exc: OSError) -> RegistryError:
    """The error for a lock file that cannot be opened: what is there, and what to do.

    Unlike the lease file, the lock file is never moved aside: whatever holds that name may be
    what other processes are locking right now, and moving it would let two of them hold "the"
    lock at once. So a person has to look.
    """
    try:
        mode: int | None = os.lstat(path).st_mode
    except OSError:
        mode = None
    if mode is not None and stat.S_ISDIR(mode):
        found = "a directory"
    elif mode is not None and stat.S_ISLNK(mode):
        found = "a symbolic link (never followed)"
    elif mode is not None and not stat.S_ISREG(mode):
        found = "something that is not a regular file"
    else:
        return RegistryError(f"cannot open the registry lock {path}: {exc.strerror or exc}", path)
    return RegistryError(
        f"cannot open the registry lock {path}: {found} is in its place. portlease never moves "
        "a lock file aside (another process may hold the lock on it): once no process uses "
        "this registry, remove it by hand, or use another registry directory",
        path,
    )
