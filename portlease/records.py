"""Lease records, the lease-file format, and every leasing decision. Pure.

Everything that decides something lives here: which records are stale, whose turn a fixed port
is, whether a port the kernel handed out is claimed, how a host is spelled and bound. There are
no files, sockets, clocks or psutil calls in this module: liveness comes in as a
``ProcessProbe`` (pid -> start time, ``None`` for "no such process", ``DENIED`` for "exists, but
we may not look"), the current time comes in as a number.

Invariants:
    * ``LeaseRecord`` and ``WaiterRecord`` are immutable and validated on construction, so a
      record in memory always has the documented types; a ``LeaseTable`` is never changed in
      place, operations return a new table.
    * ``decode_table(encode_table(t)) == t`` for every table; ``decode_table`` accepts exactly
      ``{"version": 1, "leases": [...], "waiters": [...]}`` with every field present and typed,
      and raises ``ValueError`` for anything else (the I/O layer then moves the file aside).
    * Staleness fails closed (as filelock's ``owner_is_stale``): a process counts as gone only
      when the probe says it does not exist, or exists with a start time that differs from the
      recorded one (pid reuse). ``DENIED`` counts as alive. A lease is stale only when *every*
      process it names (owner, and server after a hand-over) is gone.
    * Ports form one namespace across hosts: a lease on ``::1`` port N claims N for
      ``127.0.0.1`` too, so a port handed to one flow is never handed to another.
"""

from __future__ import annotations

import enum
import json
import math
import reprlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from portlease.errors import InvalidHost, InvalidRequest

__all__ = [
    "DENIED",
    "FORMAT_VERSION",
    "START_TIME_TOLERANCE",
    "WAITER_GRACE",
    "Denied",
    "EncodedRecords",
    "LeaseRecord",
    "LeaseTable",
    "ProcessProbe",
    "Pruned",
    "StartTime",
    "Turn",
    "TurnState",
    "WaiterRecord",
    "check_meta",
    "check_owner",
    "claimed_ports",
    "decode_table",
    "encode_record",
    "encode_table",
    "fixed_port_turn",
    "lease_is_stale",
    "lease_on_port",
    "lease_url",
    "loopback_address",
    "next_ticket",
    "process_alive",
    "pruned",
    "record_to_json",
    "set_turns",
    "waiter_is_stale",
]

#: Version of the lease file; a file with any other version is treated as unreadable.
FORMAT_VERSION: Final = 1


class Denied(enum.Enum):
    """The type of ``DENIED``, a probe's answer for a process that exists but hides its start.

    A one-member enum, so the answer is told apart by identity (``answer is DENIED``) and a
    type checker narrows ``StartTime`` by it; no float or ``None`` can ever equal it.
    """

    DENIED = "denied"

    def __repr__(self) -> str:
        return "DENIED"


#: A probe's answer for a process that exists but whose start time we may not read.
DENIED: Final = Denied.DENIED

#: What a probe says about a pid: its start time (psutil ``create_time``), ``None`` when there is
#: no such process (or it is a zombie: it has exited and closed its sockets), or ``DENIED``.
StartTime = float | None | Denied

#: Liveness as data: pid -> ``StartTime``. The I/O layer passes a real one, tests pass a dict's get.
ProcessProbe = Callable[[int], StartTime]

#: Two start times closer than this are the same process. On Linux psutil derives create_time
#: from boot time (whole seconds, shifted by wall-clock steps) plus clock ticks, so exact float
#: equality is too strict; a pid reused within one second of the original's start is not a
#: practical case.
START_TIME_TOLERANCE: Final = 1.0

#: A waiter entry whose own deadline passed this long ago is dropped even if its process lives
#: (a waiter always removes itself at its deadline; this covers a stopped or wedged process).
WAITER_GRACE: Final = 5.0

_MAX_PORT: Final = 65535
_MAX_OWNER: Final = 200
_MAX_ID: Final = 64
#: pid_t is a signed 32-bit int on every POSIX system (and Windows pids are far below it);
#: a larger "pid" from a file would overflow os.kill and friends instead of being refused.
_MAX_PID: Final = 2**31 - 1
#: Tickets count arrivals; the bound only keeps a forged one from growing without end.
_MAX_TICKET: Final = 2**63 - 1
#: How many keys an error message names (a hostile file may have thousands).
_MAX_NAMED_KEYS: Final = 5

_LEASE_KEYS: Final = frozenset(
    {
        "id",
        "port",
        "host",
        "owner",
        "pid",
        "pid_started",
        "server_pid",
        "server_started",
        "created",
        "meta",
    }
)
_WAITER_KEYS: Final = frozenset(
    {"id", "port", "pid", "pid_started", "ticket", "created", "deadline"}
)
#: JSON string literal for a str, as ``json.dumps(..., ensure_ascii=False)`` writes it.
_json_string: Final[Callable[[str], str]] = json.encoder.encode_basestring
_HOSTS: Final[Mapping[str, str]] = MappingProxyType(
    {"127.0.0.1": "127.0.0.1", "::1": "::1", "[::1]": "::1", "localhost": "localhost"}
)
_BIND: Final[Mapping[str, str]] = MappingProxyType(
    {"127.0.0.1": "127.0.0.1", "::1": "::1", "localhost": "127.0.0.1"}
)


def _is_int(value: object) -> bool:
    return type(value) is int


def _is_number(value: object) -> bool:
    if type(value) is float:
        return math.isfinite(value)
    if type(value) is int:
        try:
            return math.isfinite(value)
        except OverflowError:  # an int beyond any float (a JSON integer of 400 digits)
            return False
    return False


def _short(value: object) -> str:
    """A bounded repr for error messages: a hostile file's value may be megabytes long or
    nested deep enough that a full repr would itself hit the recursion limit."""
    return reprlib.repr(value)


def _utf8_ok(text: str) -> bool:
    """Whether ``text`` can be written as UTF-8 (JSON's ``\\ud800`` escapes decode to lone
    surrogates, which encode_table could not write back)."""
    if text.isascii():  # O(1) in CPython: the common case costs nothing
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_owner(owner: str) -> str:
    """Validate an owner label (shown by ``portlease ls``) and return it.

    Raises:
        InvalidRequest: not a non-empty, printable str of at most 200 characters.
    """
    if type(owner) is not str or not 0 < len(owner) <= _MAX_OWNER or not owner.isprintable():
        raise InvalidRequest(
            f"owner must be a non-empty printable str of at most {_MAX_OWNER} characters, "
            f"not {_short(owner)}"
        )
    return owner


def check_meta(meta: Mapping[str, str] | None) -> dict[str, str]:
    """Validate lease metadata and return a private copy.

    Meta is shown by ``portlease ls`` and stored in a file other processes of the same user
    read: put descriptions there (a server URL, a flow name), never a secret or a token.

    Raises:
        InvalidRequest: ``meta`` is not a mapping, or a key or value is not a str.
    """
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise InvalidRequest(f"meta must be a mapping of str to str, not {type(meta).__name__}")
    out: dict[str, str] = {}
    for key, value in meta.items():
        if type(key) is not str or type(value) is not str:
            raise InvalidRequest(
                f"meta must map str to str; {_short(key)}: {_short(value)} is "
                f"{type(key).__name__}: {type(value).__name__} (convert it with str() first)"
            )
        if not (_utf8_ok(key) and _utf8_ok(value)):
            raise InvalidRequest(
                f"meta must be text that UTF-8 can encode; {_short(key)}: {_short(value)} "
                "holds a lone surrogate"
            )
        out[key] = value
    return out


def _bad(what: str, value: object) -> InvalidRequest:
    return InvalidRequest(f"bad {what} {_short(value)}")


def _ok_id(value: object) -> bool:
    # Ids are hex from secrets.token_hex; printable ASCII keeps any id writable and showable.
    return (
        type(value) is str and 0 < len(value) <= _MAX_ID and value.isascii() and value.isprintable()
    )


def _ok_port(value: object) -> bool:
    return type(value) is int and 0 < value <= _MAX_PORT


def _ok_pid(value: object) -> bool:
    return type(value) is int and 0 < value <= _MAX_PID


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """One lease as written in the lease file. Immutable (``meta`` is a read-only mapping).

    Attributes:
        id: unique id of the lease (hex); release removes a record only when this matches.
        port: the leased TCP port (1..65535).
        host: the host as asked for: ``"127.0.0.1"``, ``"::1"`` or ``"localhost"``.
        owner: free text naming who holds it (shown by ``portlease ls``).
        pid: the process that acquired the lease.
        pid_started: that process's start time (psutil ``create_time``), to detect pid reuse.
        server_pid: the process serving the port after ``Lease.hand_over``, else ``None``.
        server_started: that process's start time, or ``None`` (also when it may not be read).
        created: when the lease was acquired (``time.time()``).
        meta: str -> str descriptions; never secrets (other processes of the user read it).

    Raises:
        InvalidRequest: a field has the wrong type or range.
    """

    id: str
    port: int
    host: str
    owner: str
    pid: int
    pid_started: float
    server_pid: int | None = None
    server_started: float | None = None
    created: float = 0.0
    meta: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        # Checks format their message only on failure: decoding a large file runs this per record.
        if not _ok_id(self.id):
            raise _bad("lease id", self.id)
        if not _ok_port(self.port):
            raise _bad("port", self.port)
        if type(self.host) is not str or self.host not in _BIND:  # a list is unhashable
            raise _bad("host", self.host)
        check_owner(self.owner)
        if not _ok_pid(self.pid):
            raise _bad("pid", self.pid)
        if not _is_number(self.pid_started):
            raise _bad("pid_started", self.pid_started)
        if self.server_pid is not None and not _ok_pid(self.server_pid):
            raise _bad("server_pid", self.server_pid)
        if self.server_started is not None:
            if not _is_number(self.server_started):
                raise _bad("server_started", self.server_started)
            object.__setattr__(self, "server_started", float(self.server_started))
        if not _is_number(self.created):
            raise _bad("created", self.created)
        if type(self.pid_started) is not float:
            object.__setattr__(self, "pid_started", float(self.pid_started))
        if type(self.created) is not float:
            object.__setattr__(self, "created", float(self.created))
        object.__setattr__(self, "meta", MappingProxyType(check_meta(self.meta)))

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            LeaseRecord,
            (
                self.id,
                self.port,
                self.host,
                self.owner,
                self.pid,
                self.pid_started,
                self.server_pid,
                self.server_started,
                self.created,
                dict(self.meta),
            ),
        )

    def pids(self) -> tuple[int, ...]:
        """Every process this record names (owner first)."""
        return (self.pid,) if self.server_pid is None else (self.pid, self.server_pid)


@dataclass(frozen=True, slots=True)
class WaiterRecord:
    """A place in the queue for a fixed port.

    Attributes:
        id: the id the lease will get; a waiter finds its own entry by it.
        port: the port waited for.
        pid: the waiting process; pid_started: its start time.
        ticket: order of arrival; lower goes first.
        created: when it started waiting; deadline: when it gives up (``time.time()`` clock).

    Raises:
        InvalidRequest: a field has the wrong type or range.
    """

    id: str
    port: int
    pid: int
    pid_started: float
    ticket: int
    created: float
    deadline: float

    def __post_init__(self) -> None:
        if not _ok_id(self.id):
            raise _bad("waiter id", self.id)
        if not _ok_port(self.port):
            raise _bad("port", self.port)
        if not _ok_pid(self.pid):
            raise _bad("pid", self.pid)
        if type(self.ticket) is not int or not 0 < self.ticket <= _MAX_TICKET:
            raise _bad("ticket", self.ticket)
        for name in ("pid_started", "created", "deadline"):
            value = getattr(self, name)
            if not _is_number(value):
                raise _bad(name, value)
            object.__setattr__(self, name, float(value))


@dataclass(frozen=True, slots=True)
class LeaseTable:
    """The whole lease file: leases and waiters. Operations return new tables."""

    leases: tuple[LeaseRecord, ...] = ()
    waiters: tuple[WaiterRecord, ...] = ()

    def with_lease(self, record: LeaseRecord) -> LeaseTable:
        """This table plus ``record`` (replacing a record with the same id)."""
        rest = tuple(r for r in self.leases if r.id != record.id)
        return LeaseTable((*rest, record), self.waiters)

    def without_lease(self, lease_id: str) -> LeaseTable:
        """This table without the lease ``lease_id`` (unchanged when absent)."""
        return LeaseTable(tuple(r for r in self.leases if r.id != lease_id), self.waiters)

    def lease(self, lease_id: str) -> LeaseRecord | None:
        """The lease with this id, or ``None``."""
        for record in self.leases:
            if record.id == lease_id:
                return record
        return None

    def with_waiter(self, waiter: WaiterRecord) -> LeaseTable:
        """This table plus ``waiter`` (replacing a waiter with the same id)."""
        rest = tuple(w for w in self.waiters if w.id != waiter.id)
        return LeaseTable(self.leases, (*rest, waiter))

    def without_waiter(self, waiter_id: str) -> LeaseTable:
        """This table without the waiter ``waiter_id`` (unchanged when absent)."""
        if not self.waiters:
            return self
        return LeaseTable(self.leases, tuple(w for w in self.waiters if w.id != waiter_id))

    def waiter(self, waiter_id: str) -> WaiterRecord | None:
        """The waiter with this id, or ``None``."""
        for waiter in self.waiters:
            if waiter.id == waiter_id:
                return waiter
        return None


# --- file format -------------------------------------------------------------------------------


def record_to_json(record: LeaseRecord) -> dict[str, Any]:
    """The JSON object for one lease record (also what ``portlease ls --json`` prints)."""
    return {
        "id": record.id,
        "port": record.port,
        "host": record.host,
        "owner": record.owner,
        "pid": record.pid,
        "pid_started": record.pid_started,
        "server_pid": record.server_pid,
        "server_started": record.server_started,
        "created": record.created,
        "meta": dict(record.meta),
    }


def _waiter_to_json(waiter: WaiterRecord) -> dict[str, Any]:
    return {
        "id": waiter.id,
        "port": waiter.port,
        "pid": waiter.pid,
        "pid_started": waiter.pid_started,
        "ticket": waiter.ticket,
        "created": waiter.created,
        "deadline": waiter.deadline,
    }


def _json_number(value: float | int | None) -> str:
    return "null" if value is None else repr(value)


def encode_record(record: LeaseRecord) -> bytes:
    """The compact JSON bytes of one lease record, as it appears inside the lease file.

    Byte for byte what ``json.dumps(record_to_json(record), separators=(",", ":"),
    ensure_ascii=False)`` gives, built directly: acquire encodes one record per call and
    ``json.dumps`` with its dict costs about three times as much.
    """
    text = _json_string
    meta = ",".join(f"{text(key)}:{text(value)}" for key, value in record.meta.items())
    return (
        f'{{"id":{text(record.id)},"port":{record.port},"host":{text(record.host)},'
        f'"owner":{text(record.owner)},"pid":{record.pid},'
        f'"pid_started":{record.pid_started!r},"server_pid":{_json_number(record.server_pid)},'
        f'"server_started":{_json_number(record.server_started)},"created":{record.created!r},'
        f'"meta":{{{meta}}}}}'
    ).encode()


#: A memo of encoded records for ``encode_table``: lease id -> (the record, its JSON bytes).
EncodedRecords = dict[str, tuple[LeaseRecord, bytes]]


def encode_table(table: LeaseTable, memo: EncodedRecords | None = None) -> bytes:
    """The bytes of the lease file for ``table`` (compact JSON, UTF-8, one trailing newline).

    ``memo`` (optional, owned by the caller) holds records encoded by an earlier call; a record
    that is the very same object is not encoded again. On return it holds exactly the records of
    ``table``. The output does not depend on it.
    """
    known: EncodedRecords = {} if memo is None else memo
    fresh: EncodedRecords = {}
    parts: list[bytes] = []
    for record in table.leases:
        hit = known.get(record.id)
        if hit is None or hit[0] is not record:
            hit = (record, encode_record(record))
        fresh[record.id] = hit
        parts.append(hit[1])
    if memo is not None:
        memo.clear()
        memo.update(fresh)
    waiters = (
        json.dumps([_waiter_to_json(w) for w in table.waiters], separators=(",", ":"))
        if table.waiters
        else "[]"
    )
    return b"".join(
        (
            b'{"version":%d,"leases":[' % FORMAT_VERSION,
            b",".join(parts),
            b'],"waiters":',
            waiters.encode(),
            b"}\n",
        )
    )


def _object(value: object, keys: frozenset[str], what: str) -> dict[str, Any]:
    if type(value) is not dict:
        raise ValueError(f"{what} is not a JSON object")
    if value.keys() != keys:
        missing = sorted(keys - value.keys())
        extra = sorted(value.keys() - keys)[:_MAX_NAMED_KEYS]
        raise ValueError(f"{what} has missing keys {missing} / unknown keys {_short(extra)}")
    return value


def _reject_constant(name: str) -> None:
    raise ValueError(f"non-finite number {name} in lease file")


def decode_table(data: bytes) -> LeaseTable:
    """Parse the lease file. Whatever the bytes, the only error is ``ValueError``.

    Raises:
        ValueError: the bytes are not UTF-8 JSON of the version-1 shape, or a record has a
            missing, unknown or mistyped field. Nothing is returned for a partly valid file.
            Nesting too deep for the parser, numbers beyond a float and values of the wrong
            type anywhere are reported the same way, never as another exception.
    """
    try:
        return _decode_table(data)
    except ValueError:
        raise
    except RecursionError:
        # CPython's JSON parser stops at the recursion limit ([[[[...]]]] 100,000 deep); the
        # size of the input is bounded by the caller (the registry reads at most a few MiB).
        raise ValueError("lease file is JSON nested too deeply") from None
    except (TypeError, OverflowError, AttributeError, KeyError) as exc:
        # Every field is checked before use; this is the guard for a check that was missed,
        # so that a file another process wrote can never raise anything but ValueError.
        raise ValueError(f"lease file holds a value of the wrong type ({exc})") from None


def _decode_table(data: bytes) -> LeaseTable:
    if type(data) is not bytes:
        raise ValueError(f"lease file content must be bytes, not {type(data).__name__}")
    document = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    if type(document) is not dict or document.keys() != {"version", "leases", "waiters"}:
        raise ValueError("lease file is not an object with exactly version, leases, waiters")
    version = document["version"]
    if type(version) is not int or version != FORMAT_VERSION:
        raise ValueError(f"lease file version {_short(version)} is not {FORMAT_VERSION}")
    raw_leases = document["leases"]
    raw_waiters = document["waiters"]
    if type(raw_leases) is not list or type(raw_waiters) is not list:
        raise ValueError("leases and waiters must be JSON arrays")
    try:
        leases = tuple(
            LeaseRecord(**_object(item, _LEASE_KEYS, f"lease #{i}"))
            for i, item in enumerate(raw_leases)
        )
        waiters = tuple(
            WaiterRecord(**_object(item, _WAITER_KEYS, f"waiter #{i}"))
            for i, item in enumerate(raw_waiters)
        )
    except InvalidRequest as exc:
        raise ValueError(f"bad record in lease file: {exc}") from exc
    if len({r.id for r in leases}) != len(leases) or len({w.id for w in waiters}) != len(waiters):
        raise ValueError("duplicate ids in lease file")
    return LeaseTable(leases, waiters)


# --- liveness ----------------------------------------------------------------------------------


def process_alive(pid: int, started: float | None, probe: ProcessProbe) -> bool:
    """Whether the process ``pid`` that started at ``started`` still runs. Fails closed.

    Gone only when the probe reports no such process, or a process whose start time differs
    from ``started`` by ``START_TIME_TOLERANCE`` or more (the pid was reused). ``DENIED``, or a
    record without a start time, counts as alive.
    """
    now = probe(pid)
    if now is None:
        return False
    if now is DENIED or started is None:
        return True
    return abs(now - started) < START_TIME_TOLERANCE


def lease_is_stale(record: LeaseRecord, probe: ProcessProbe) -> bool:
    """A lease is stale when neither its owner nor its server (after a hand-over) is alive."""
    if process_alive(record.pid, record.pid_started, probe):
        return False
    return record.server_pid is None or not process_alive(
        record.server_pid, record.server_started, probe
    )


def waiter_is_stale(waiter: WaiterRecord, probe: ProcessProbe, now: float) -> bool:
    """A waiter is stale when its process is gone or its deadline passed ``WAITER_GRACE`` ago."""
    return now > waiter.deadline + WAITER_GRACE or not process_alive(
        waiter.pid, waiter.pid_started, probe
    )


@dataclass(frozen=True, slots=True)
class Pruned:
    """The result of ``pruned``: the live table and what was taken out of it."""

    table: LeaseTable
    stale_leases: tuple[LeaseRecord, ...]
    stale_waiters: tuple[WaiterRecord, ...]

    @property
    def changed(self) -> bool:
        """Whether anything was removed."""
        return bool(self.stale_leases or self.stale_waiters)


def pruned(table: LeaseTable, probe: ProcessProbe, now: float) -> Pruned:
    """Split ``table`` into its live part and its stale leases and waiters (order kept).

    Records naming the same processes share one verdict, so a file of many leases held by few
    processes costs a dictionary lookup per lease.
    """
    live: list[LeaseRecord] = []
    stale: list[LeaseRecord] = []
    verdicts: dict[tuple[int, float, int | None, float | None], bool] = {}
    for record in table.leases:
        key = (record.pid, record.pid_started, record.server_pid, record.server_started)
        is_stale = verdicts.get(key)
        if is_stale is None:
            is_stale = verdicts[key] = lease_is_stale(record, probe)
        (stale if is_stale else live).append(record)
    live_waiters: list[WaiterRecord] = []
    stale_waiters: list[WaiterRecord] = []
    for waiter in table.waiters:
        (stale_waiters if waiter_is_stale(waiter, probe, now) else live_waiters).append(waiter)
    if not stale and not stale_waiters:
        return Pruned(table, (), ())
    return Pruned(LeaseTable(tuple(live), tuple(live_waiters)), tuple(stale), tuple(stale_waiters))


# --- port decisions ----------------------------------------------------------------------------


def lease_on_port(table: LeaseTable, port: int) -> LeaseRecord | None:
    """The lease claiming ``port`` (any host), or ``None``. Pass a pruned table for live ones."""
    for record in table.leases:
        if record.port == port:
            return record
    return None


def claimed_ports(table: LeaseTable) -> frozenset[int]:
    """Every port some lease in ``table`` claims; a kernel-chosen port in it must be skipped."""
    return frozenset({r.port for r in table.leases})


class TurnState(enum.Enum):
    """Whose turn a fixed port is, from one requester's point of view."""

    TAKE = "take"  # nobody holds it and nobody is queued before us: try to bind it now
    HELD = "held"  # a live lease holds it
    QUEUED = "queued"  # free, or about to be, but live waiters arrived before us


@dataclass(frozen=True, slots=True)
class Turn:
    """``fixed_port_turn``'s answer: the state, the holder (when HELD), and waiters ahead."""

    state: TurnState
    holder: LeaseRecord | None = None
    ahead: int = 0


def fixed_port_turn(table: LeaseTable, port: int, waiter_id: str) -> Turn:
    """Decide whether the requester ``waiter_id`` may take ``port`` now. First come, first served.

    ``table`` must be pruned (live records only). The requester may or may not already have a
    waiter entry; without one, every live waiter for the port is ahead of it.
    """
    holder = lease_on_port(table, port)
    mine = table.waiter(waiter_id)
    ahead = sum(
        1
        for w in table.waiters
        if w.port == port and w.id != waiter_id and (mine is None or w.ticket < mine.ticket)
    )
    if holder is not None:
        return Turn(TurnState.HELD, holder, ahead)
    if ahead:
        return Turn(TurnState.QUEUED, None, ahead)
    return Turn(TurnState.TAKE)


def set_turns(
    table: LeaseTable, ports: Sequence[int], waiter_ids: Mapping[int, str]
) -> dict[int, Turn]:
    """``fixed_port_turn`` for every port of a set at once, in one pass over ``table``.

    The answer for each port is exactly ``fixed_port_turn(table, port, waiter_ids[port])``;
    the cost is O(leases + waiters + ports) instead of O(ports x waiters), which is what keeps
    the lock hold of a large set's round short while many waiters are queued.
    """
    wanted = {port: waiter_ids[port] for port in ports}
    holders: dict[int, LeaseRecord] = {}
    for record in table.leases:
        if record.port in wanted:
            holders.setdefault(record.port, record)
    mine: dict[int, int] = {}
    for waiter in table.waiters:
        if wanted.get(waiter.port) == waiter.id:
            mine.setdefault(waiter.port, waiter.ticket)
    ahead: dict[int, int] = {}
    for waiter in table.waiters:
        own_id = wanted.get(waiter.port)
        if own_id is None or waiter.id == own_id:
            continue
        ticket = mine.get(waiter.port)
        if ticket is None or waiter.ticket < ticket:
            ahead[waiter.port] = ahead.get(waiter.port, 0) + 1
    turns: dict[int, Turn] = {}
    for port in wanted:
        holder = holders.get(port)
        count = ahead.get(port, 0)
        if holder is not None:
            turns[port] = Turn(TurnState.HELD, holder, count)
        elif count:
            turns[port] = Turn(TurnState.QUEUED, None, count)
        else:
            turns[port] = Turn(TurnState.TAKE)
    return turns


def next_ticket(table: LeaseTable) -> int:
    """The ticket for a new waiter: after every ticket in the table."""
    return max((w.ticket for w in table.waiters), default=0) + 1


# --- hosts and URLs ----------------------------------------------------------------------------


def loopback_address(host: str) -> tuple[str, str]:
    """Map an accepted host spelling to (host as recorded, address to bind).

    ``"127.0.0.1"`` binds 127.0.0.1; ``"::1"`` or ``"[::1]"`` binds ::1; ``"localhost"`` binds
    127.0.0.1 but is recorded as ``"localhost"`` so that URLs say localhost (RFC 8252 section
    8.3 recommends the literal addresses; localhost is allowed for servers that insist on it).

    Raises:
        InvalidHost: any other value, including other loopback addresses such as 127.0.0.2.
    """
    if type(host) is not str:
        raise InvalidHost(repr(host))
    recorded = _HOSTS.get(host.strip().lower())
    if recorded is None:
        raise InvalidHost(host)
    return recorded, _BIND[recorded]


def lease_url(host: str, port: int, path: str = "/") -> str:
    """``http://HOST:PORT/path`` with IPv6 hosts in brackets; ``path`` gets a leading slash."""
    shown = f"[{host}]" if ":" in host else host
    if not path.startswith("/"):
        path = "/" + path
    return f"http://{shown}:{port}{path}"
