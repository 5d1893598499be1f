"""``Registry``: the acquire policy over the lease file. I/O.

Every decision is taken by ``portlease.records`` (pure); this module feeds it the lease file's
table (``portlease.leasefile``), the processes' start times and the clock, and carries out its
answers: bind, record, wait, hand over, remove.

Invariants:
    * The bind is the proof, the record is the claim: a socket is bound and listening *before*
      its record is written, a record is removed only *after* its socket is closed, and every
      bind of a leased port happens under the lock. So under the lock, a port that a portlease
      process holds always has its record in the file.
    * Any port (``port=0``): the kernel picks; a port a live record claims is kept bound while
      the kernel is asked again (at most ``_MAX_PICKS`` times), so no live lease's port is
      handed out twice.
    * A fixed port held by another live lease is handed over first come, first served among
      waiters (the waiter queue in the file, ``records.fixed_port_turn``), up to ``wait``, then
      ``LeaseTimeout``; one held by a process without a lease is ``PortBusy`` at once
      (``portlease.holders``). After any failure nothing is bound and no record or waiter entry
      of the call remains (a waiter entry that cannot be removed expires with its deadline).
    * A port set waits as one caller: waiter entries on its first ``_MAX_SET_QUEUE`` held
      ports only (so a 1,024-port set does not put 1,024 entries per waiter in the file every
      operation reads), one ticket; while waiting it looks at the file without the lock
      (``LeaseFile.peek``) and takes a locked round only when a port may be its, when a
      foreign port is due to be tried again, at its deadline, or once per
      ``_SET_LOCKED_EVERY`` (deaths are seen there). A set all of whose ports are foreign is
      ``PortBusy`` after one bind attempt per port and one look at the OS's sockets.
    * The lock is held only for one read-modify-write (and, for a lease, the bind that proves
      it), never across a sleep, a wait for another lease, a fork or a spawn.
    * No module-level mutable state: everything lives on ``Registry`` and ``Lease`` instances.

Where the directory is and that it is private: ``portlease.location``. The lease's own side
(socket, release, who releases what): ``portlease.lease``.
"""

from __future__ import annotations

import logging
import math
import os
import reprlib
import secrets
import time
from collections.abc import Callable, Collection, Mapping, MutableSequence
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Final, TypeAlias

from portlease import _procs, _sockets
from portlease.errors import InvalidRequest, LeaseTimeout, PortBusy, RegistryError
from portlease.holders import port_busy, set_busy
from portlease.lease import Lease
from portlease.leasefile import DEFAULT_LOCK_TIMEOUT, LeaseFile, Transaction
from portlease.location import registry_directory
from portlease.records import (
    DENIED,
    LeaseRecord,
    LeaseTable,
    TurnState,
    WaiterRecord,
    check_meta,
    check_owner,
    claimed_ports,
    fixed_port_turn,
    lease_is_stale,
    loopback_address,
    next_ticket,
    pruned,
    set_turns,
)

if TYPE_CHECKING:
    import socket

__all__ = ["LeaseRecords", "LeaseStates", "Registry"]

#: Bound on remembered start times of other processes (cleared past it).
_MAX_REMEMBERED: Final = 1024
#: Bound on kernel-chosen ports that a live record claims before giving up (port=0).
_MAX_PICKS: Final = 64
#: The most ports a port set may name (hermes's CIMD document names five).
_MAX_SET: Final = 1024
#: Waiter entries one set call queues at most (its first held ports, in trying order).
_MAX_SET_QUEUE: Final = 8
#: Ports last seen bound by foreign processes that a later round of a set tries again.
_MAX_FOREIGN_RETRIES: Final = 16
#: A waiting set takes a locked round at least this often (seconds), whatever the file read
#: without the lock says: a foreign port may be freed without any change to the file.
_SET_LOCKED_EVERY: Final = 1.0
#: Polling while waiting for a fixed port: first sleep, growth, ceiling (seconds).
_POLL_FIRST: Final = 0.002
_POLL_GROWTH: Final = 1.5
_POLL_MAX: Final = 0.05

_log = logging.getLogger("portlease")

#: Builds the record for the port that was bound (the lease id and owner are fixed before).
_RecordFactory = Callable[[int], LeaseRecord]

# Named before the class: inside it, ``list`` is the public method ``Registry.list`` (the
# contract), so an annotation there cannot say ``list[...]`` for the builtin.
#: What ``Registry.list`` and ``prune`` return: lease records sorted by port (a new list).
LeaseRecords: TypeAlias = list[LeaseRecord]
#: What ``Registry.list_states`` returns: (record, is stale) pairs sorted by port (a new list).
LeaseStates: TypeAlias = list[tuple[LeaseRecord, bool]]


class Registry:
    """A directory of leases: ``leases.json`` guarded by ``leases.json.lock``.

    Args:
        directory: where the lease file lives (str or path-like); created 0700 when missing.
            Default: ``default_directory()``.
        lock_timeout: seconds to wait for the registry lock before ``RegistryError``.
        create: False never creates the directory (for tools that only look, such as
            ``portlease ls``): a missing one is a ``RegistryError``.

    Raises:
        RegistryError: the directory cannot be created (or is missing, with
            ``create=False``) or is not a safe directory.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        create: bool = True,
    ) -> None:
        self._directory = registry_directory(directory, create=create)
        self._file = LeaseFile(self._directory, lock_timeout)
        self._own: tuple[int, float] | None = None
        # Start times of other processes, reused for a second by later operations (see
        # _procs.START_TIME_REUSE): reading /proc for every pid in the file on every write
        # lengthens every lock hold. Read and written only under the lock (by the probes).
        self._starts: dict[int, tuple[float, float]] = {}

    @property
    def directory(self) -> Path:
        """The registry directory."""
        return self._directory

    @property
    def lease_file(self) -> Path:
        """``<directory>/leases.json``."""
        return self._file.path

    def __repr__(self) -> str:
        return f"Registry({str(self._directory)!r})"

    # --- public operations ----------------------------------------------------------------

    def acquire(
        self,
        owner: str,
        *,
        port: int | Collection[int] = 0,
        host: str = "127.0.0.1",
        wait: float = 0.0,
        meta: Mapping[str, str] | None = None,
    ) -> Lease:
        """Bind a loopback port, listen on it, and record the lease.

        Args:
            owner: who holds the lease (free text shown by ``portlease ls``).
            port: 0 for any free port; N for exactly N; a set or sequence of ports (a
                client registration that names several redirect ports, such as hermes's
                27890-27894) for the first of them that is free, in the sequence's order
                (a set's: ascending). When every one is held by live leases, waits up to
                ``wait`` for the first to be released: first come, first served with the
                other waiters on the set's first 8 held ports, whoever looks first on the
                others; when every one is bound by processes without a lease, ``PortBusy``
                at once, naming the first few (a count and range for the rest).
            host: ``"127.0.0.1"`` (default), ``"::1"`` or ``"localhost"`` (binds 127.0.0.1).
            wait: for a fixed port held by another live lease, seconds to wait for it, in
                arrival order with other waiters; 0 gives up at once.
            meta: str -> str descriptions stored with the record; never secrets.

        Returns:
            A ``Lease`` whose socket is bound and listening; its record is in the file.

        Raises:
            InvalidHost: ``host`` is not one of the loopback spellings above.
            InvalidRequest: bad port, owner, wait or meta.
            PortBusy: the port cannot be bound and no live lease holds it (at once); for a
                set, every port of it is so.
            LeaseTimeout: a live lease (or earlier waiters) kept the port (for a set: every
                port not bound by a foreign process) for ``wait`` seconds.
            RegistryError: the lock timed out or the lease file cannot be written.
            After any failure nothing is bound and no record or waiter entry of this call
            remains.
        """
        recorded_host, address = loopback_address(host)
        ports: tuple[int, ...] | None = None
        if type(port) is not int:
            ports = _port_set(port)
        elif not 0 <= port <= 65535:
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

        if ports is not None:
            return self._acquire_set(address, ports, float(wait), record_for)
        assert type(port) is int
        if port == 0:
            return self._acquire_any(address, record_for)
        return self._acquire_fixed(address, port, float(wait), lease_id, record_for)

    def list(self, *, stale: bool = False) -> LeaseRecords:
        """The leases in the file, sorted by port: live ones, or all with ``stale=True``.

        Reads under the lock and writes nothing (unless the file had to be moved aside).
        """
        with self._file.locked() as table:
            probe = self._probe()
            records = [r for r in table.leases if stale or not lease_is_stale(r, probe)]
        return sorted(records, key=lambda r: (r.port, r.created))

    def list_states(self) -> LeaseStates:
        """Every lease paired with whether it is stale, sorted by port (``portlease ls``).

        Reads under the lock and writes nothing (unless the file had to be moved aside).
        """
        with self._file.locked() as table:
            probe = self._probe()
            rows = [(r, lease_is_stale(r, probe)) for r in table.leases]
        return sorted(rows, key=lambda row: (row[0].port, row[0].created))

    def prune(self) -> LeaseRecords:
        """Remove stale leases (and dead waiters) under the lock; return the removed leases."""
        with self._transaction() as txn:
            removed = txn.stale
        return sorted(removed, key=lambda r: (r.port, r.created))

    # --- acquire paths --------------------------------------------------------------------

    def _acquire_any(self, address: str, record_for: _RecordFactory) -> Lease:
        sock: socket.socket | None = None
        try:
            with self._transaction() as txn:
                sock = _bind_unclaimed(address, claimed_ports(txn.table))
                record = record_for(sock.getsockname()[1])
                txn.set(txn.table.with_lease(record))
            return Lease(self, record, sock)
        except BaseException:
            if sock is not None:
                sock.close()
            raise

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
                    raise port_busy(port, address, failure) from failure
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

    def _acquire_set(
        self,
        address: str,
        ports: tuple[int, ...],
        wait: float,
        record_for: _RecordFactory,
    ) -> Lease:
        """The first port of ``ports`` that may be taken now, else wait for one.

        Each port is judged as a fixed port is (``set_turns``, one pass over the table). While
        waiting, this call has one waiter entry for each of the first ``_MAX_SET_QUEUE``
        ports held by a live lease, all with one ticket (its arrival): whichever of those is
        released goes to the earliest waiter for it; any other port of the set goes to
        whoever finds it free first. The first round tries to bind every port that may be
        taken; a later round tries the ports last seen bound by a foreign process at most
        ``_MAX_FOREIGN_RETRIES`` at a time, in turn, so that a round's lock hold stays short
        however large the set (a port a lease releases is tried in the very next round).
        """
        start = time.monotonic()
        deadline = start + wait
        waiter_ids = {p: secrets.token_hex(8) for p in ports}
        queued: set[str] = set()
        foreign: dict[int, OSError] = {}
        retry_from = 0
        locked_round = start
        seen: list[LeaseTable] = []  # the table the last look without the lock judged
        sleep = _POLL_FIRST
        sock: socket.socket | None = None
        record: LeaseRecord | None = None
        try:
            while True:
                held: dict[int, LeaseRecord | None] = {}
                timeout: LeaseTimeout | None = None
                retry = _foreign_retries(ports, foreign, retry_from)
                now = time.monotonic()
                if (
                    queued
                    and not retry
                    and now < deadline
                    and now - locked_round < _SET_LOCKED_EVERY
                    and not self._may_take(ports, waiter_ids, seen)
                ):
                    # Nothing to take, said the file read without the lock: no lock round.
                    # Thirty waiters taking the lock every poll kept others from it for
                    # seconds (every round reads, prunes and judges the whole table).
                    time.sleep(min(sleep, max(deadline - now, 0.0)))
                    sleep = min(sleep * _POLL_GROWTH, _POLL_MAX)
                    continue
                locked_round = now
                retry_from += len(retry)
                with self._transaction() as txn:
                    turns = set_turns(txn.table, ports, waiter_ids)
                    for candidate in ports:
                        turn = turns[candidate]
                        if turn.state is not TurnState.TAKE:
                            held[candidate] = turn.holder
                            foreign.pop(candidate, None)
                            continue
                        if candidate in foreign and candidate not in retry:
                            continue  # still counted foreign; its turn to be tried comes
                        try:
                            sock = _sockets.open_listener(address, candidate)
                        except OSError as exc:
                            foreign[candidate] = exc
                            continue
                        record = record_for(candidate)
                        table = txn.table
                        for waiter_id in queued:
                            table = table.without_waiter(waiter_id)
                        txn.set(table.with_lease(record))
                        queued.clear()
                        break
                    if record is None and held:
                        if time.monotonic() >= deadline:
                            first = next(iter(held))
                            timeout = LeaseTimeout(first, held[first], time.monotonic() - start)
                            self._unqueue(txn, queued)
                        elif not queued:
                            self._queue(txn, held, waiter_ids, deadline, queued)
                    elif record is None:
                        self._unqueue(txn, queued)
                if sock is not None and record is not None:
                    return Lease(self, record, sock)
                if timeout is not None:
                    raise timeout
                if not held:
                    raise set_busy(ports, address, foreign)
                time.sleep(min(sleep, max(deadline - time.monotonic(), 0.0)))
                sleep = min(sleep * _POLL_GROWTH, _POLL_MAX)
        except BaseException:
            if sock is not None and record is None:
                sock.close()
            for waiter_id in queued:
                self._forget_waiter(waiter_id)
            raise

    def _may_take(
        self,
        ports: tuple[int, ...],
        waiter_ids: Mapping[int, str],
        seen: MutableSequence[LeaseTable],
    ) -> bool:
        """Whether, by the lease file read without the lock, a port of the set may be ours.

        True when the file cannot be read that way (the locked round will say). False at once
        when the file is the very one judged last time (``seen``): only a death could change
        the answer, and the locked round every ``_SET_LOCKED_EVERY`` seconds sees deaths, so
        thirty idle waiters cost a file read each per poll. The probe is a fresh one without
        the registry's remembered start times: those are touched only under the lock.
        """
        table = self._file.peek()
        if table is None:
            return True
        if seen and seen[0] is table:
            return False
        seen.clear()
        seen.append(table)
        live = pruned(table, _procs.LivenessProbe(self._own_process()), time.time()).table
        turns = set_turns(live, ports, waiter_ids)
        return any(turn.state is TurnState.TAKE for turn in turns.values())

    def _queue(
        self,
        txn: Transaction,
        held: Mapping[int, LeaseRecord | None],
        waiter_ids: Mapping[int, str],
        deadline: float,
        queued: set[str],
    ) -> None:
        """Waiter entries for the first ``_MAX_SET_QUEUE`` held ports, one ticket (locked)."""
        pid, started = self._own_process()
        now = time.time()
        ticket = next_ticket(txn.table)
        table = txn.table
        # Bounded: a set of 1,024 ports would otherwise add 1,024 entries per waiter to the
        # file that every acquire of every process reads, prunes and writes back.
        for candidate in list(held)[:_MAX_SET_QUEUE]:
            waiter = WaiterRecord(
                id=waiter_ids[candidate],
                port=candidate,
                pid=pid,
                pid_started=started,
                ticket=ticket,
                created=now,
                deadline=now + max(deadline - time.monotonic(), 0.0),
            )
            table = table.with_waiter(waiter)
            queued.add(waiter.id)
        txn.set(table)

    @staticmethod
    def _unqueue(txn: Transaction, queued: set[str]) -> None:
        if not queued:
            return
        table = txn.table
        for waiter_id in queued:
            table = table.without_waiter(waiter_id)
        txn.set(table)
        queued.clear()

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
                    f"lease {lease_id} is no longer in {self._file.path}; cannot hand it over",
                    str(self._file.path),
                )
            started = txn.probe(pid)
            if started is None:
                raise RegistryError(
                    f"cannot hand lease {lease_id} over to pid {pid}: no such process"
                )
            updated = replace(
                record,
                server_pid=pid,
                server_started=None if started is DENIED else started,
            )
            txn.set(txn.table.with_lease(updated))
        return updated

    def _remove(self, lease_id: str) -> None:
        with self._transaction() as txn:
            if txn.table.lease(lease_id) is not None:
                txn.set(txn.table.without_lease(lease_id))

    # --- liveness ---------------------------------------------------------------------------

    def _own_process(self) -> tuple[int, float]:
        pid = os.getpid()
        own = self._own
        if own is None or own[0] != pid:  # first use, or we are a forked child
            started = _procs.LivenessProbe()(pid)
            if started is None or started is DENIED:  # pragma: no cover - we do exist
                raise RegistryError(f"cannot read this process's own start time (pid {pid})")
            own = self._own = (pid, started)
        return own

    def _probe(self) -> _procs.LivenessProbe:
        """A fresh probe (memo for one operation only), knowing this process's start time."""
        if len(self._starts) > _MAX_REMEMBERED:  # entries only expire when looked up again
            self._starts.clear()
        return _procs.LivenessProbe(self._own_process(), self._starts)

    def _transaction(self) -> AbstractContextManager[Transaction]:
        """The lease file's read-modify-write, with a fresh probe taken under the lock."""
        return self._file.transaction(self._probe)


def _port_set(port: object) -> tuple[int, ...]:
    """A port set or sequence as a tuple in trying order (a set's: ascending), checked."""
    if isinstance(port, str | bytes | bytearray | Mapping) or not isinstance(port, Collection):
        raise InvalidRequest(
            f"port must be an int (0: any free port) or a set or sequence of ports, not {port!r}"
        )
    if not 1 <= len(port) <= _MAX_SET:
        raise InvalidRequest(f"a port set holds 1 to {_MAX_SET} ports, not {len(port)}")
    items = list(port)
    # Checked before sorting: sorted() of mixed types ({5000, "a"}) raises TypeError.
    for item in items:
        if type(item) is not int or not 1 <= item <= 65535:
            raise InvalidRequest(
                f"every port of a port set is an int in 1..65535, not {reprlib.repr(item)}"
            )
    if isinstance(port, set | frozenset):
        items.sort()
    return tuple(dict.fromkeys(items))


def _foreign_retries(
    ports: tuple[int, ...], foreign: Mapping[int, OSError], start: int
) -> frozenset[int]:
    """The next ``_MAX_FOREIGN_RETRIES`` ports of ``foreign`` in the set's order, from ``start``
    (wrapping): every foreign port is tried again within ``len(foreign) / 16`` rounds."""
    known = [p for p in ports if p in foreign]
    if len(known) <= _MAX_FOREIGN_RETRIES:
        return frozenset(known)
    first = start % len(known)
    return frozenset((known + known)[first : first + _MAX_FOREIGN_RETRIES])


def _bind_unclaimed(address: str, claimed: frozenset[int]) -> socket.socket:
    """Bind and listen on a port the kernel picks that no live lease claims."""
    skipped: list[socket.socket] = []
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
