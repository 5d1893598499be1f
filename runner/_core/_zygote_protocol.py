"""The parent <-> zygote control protocol: one JSON object per packet, versioned. Pure.

``runner._parent._launch`` (the parent's ``Zygote``) and ``runner._child._zygote`` import
this module and nothing else defines a packet's shape. The transport is an
``AF_UNIX``/``SOCK_SEQPACKET`` socket pair, so one packet is one message and an empty packet
is end of stream.

- parent -> zygote, commands: ``Fork`` (carries exactly three descriptors as
  ``SCM_RIGHTS``: listening socket, channel, stderr), ``Signal``;
- zygote -> parent, past-tense facts: ``Ready`` (once, first), ``Forked`` or ``Refused``
  (one per ``Fork``), ``Exited`` (once per child, after it is reaped);
- every packet carries ``"v": PROTOCOL_VERSION`` and ``"op"``; ``decode`` raises
  ``ZygoteProtocolError`` and nothing else for any bytes that are not a valid message
  (not JSON, nested too deep, another version, an unknown op, a missing, extra or
  ill-typed field, a bool where an int belongs, a pid that is not a positive ``pid_t``).

The pid checks are a safety property, not tidiness: the zygote passes ``Signal.pid`` to
``kill(2)``, where 0 means "my process group" and -1 "every process I may signal".

Only the standard library may be imported here: the zygote imports this module, and every
module it imports is paid for once and inherited by every login's child.

Bump ``PROTOCOL_VERSION`` whenever a message changes, and extend the round-trip test.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "FORK_FDS",
    "MAX_PACKET_BYTES",
    "PROTOCOL_VERSION",
    "Exited",
    "Fork",
    "Forked",
    "ParentCommand",
    "Ready",
    "Refused",
    "Signal",
    "ZygoteFact",
    "ZygoteMessage",
    "ZygoteProtocolError",
    "decode",
    "encode",
]

PROTOCOL_VERSION: Final = 1
MAX_PACKET_BYTES: Final = 4096  # the largest message is well under 200 bytes
FORK_FDS: Final = 3  # listening socket, channel, stderr

_PID_MAX: Final = 2**31 - 1  # pid_t is a signed 32-bit int
_ID_MAX: Final = 2**63 - 1
_REASON_MAX: Final = 1000


class ZygoteProtocolError(ValueError):
    """A packet (or a message being built) is not a valid message of this protocol."""


def _check_int(owner: object, name: str, value: object, low: int, high: int) -> None:
    # JSON ``true`` decodes to a bool, and bool is an int subclass (``signal.Signals``,
    # also an int subclass, is welcome: it encodes as its number).
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ZygoteProtocolError(
            f"{type(owner).__name__}.{name} must be an int in [{low}, {high}]"
        )


def _check_reason(owner: object, value: object) -> None:
    if type(value) is not str or len(value) > _REASON_MAX:
        raise ZygoteProtocolError(f"{type(owner).__name__}.reason must be a short str")


# --- parent -> zygote: commands ------------------------------------------------------


@dataclass(frozen=True)
class Fork:
    """Fork a login's child serving the three descriptors sent with this packet."""

    id: int

    def __post_init__(self) -> None:
        _check_int(self, "id", self.id, 0, _ID_MAX)


@dataclass(frozen=True)
class Signal:
    """Send ``sig`` to the child ``pid``, if the zygote has not reaped it yet."""

    pid: int
    sig: int

    def __post_init__(self) -> None:
        _check_int(self, "pid", self.pid, 1, _PID_MAX)
        _check_int(self, "sig", self.sig, 1, signal.NSIG - 1)


# --- zygote -> parent: facts ---------------------------------------------------------


@dataclass(frozen=True)
class Ready:
    """The zygote has imported what children use and reads commands now."""


@dataclass(frozen=True)
class Forked:
    """``Fork(id)`` started the child ``pid``."""

    id: int
    pid: int

    def __post_init__(self) -> None:
        _check_int(self, "id", self.id, 0, _ID_MAX)
        _check_int(self, "pid", self.pid, 1, _PID_MAX)


@dataclass(frozen=True)
class Refused:
    """``Fork(id)`` started nothing; ``id`` is None when the command itself was unreadable
    (the two ends disagree about the protocol, so the parent stops trusting the zygote)."""

    id: int | None
    reason: str

    def __post_init__(self) -> None:
        if self.id is not None:
            _check_int(self, "id", self.id, 0, _ID_MAX)
        _check_reason(self, self.reason)


@dataclass(frozen=True)
class Exited:
    """The zygote reaped ``pid``; ``code`` as ``os.waitstatus_to_exitcode`` gives it
    (negative: killed by that signal)."""

    pid: int
    code: int

    def __post_init__(self) -> None:
        _check_int(self, "pid", self.pid, 1, _PID_MAX)
        _check_int(self, "code", self.code, -(signal.NSIG - 1), 255)


ParentCommand = Fork | Signal
ZygoteFact = Ready | Forked | Refused | Exited
ZygoteMessage = ParentCommand | ZygoteFact

_OPS: Final[Mapping[str, type[Any]]] = types.MappingProxyType(
    {
        "fork": Fork,
        "signal": Signal,
        "ready": Ready,
        "forked": Forked,
        "refused": Refused,
        "exited": Exited,
    }
)
_NAMES: Final[Mapping[type[Any], str]] = types.MappingProxyType(
    {cls: op for op, cls in _OPS.items()}
)


def encode(message: ZygoteMessage) -> bytes:
    """One packet. The message validated itself when it was built."""
    body: dict[str, Any] = {"v": PROTOCOL_VERSION, "op": _NAMES[type(message)]}
    body.update(dataclasses.asdict(message))
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


def decode(data: bytes) -> ZygoteMessage:
    """Parse one packet; raises ``ZygoteProtocolError`` for anything but a valid message."""
    if len(data) > MAX_PACKET_BYTES:
        raise ZygoteProtocolError(f"packet of {len(data)} bytes is over the limit")
    try:
        body = json.loads(data)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ZygoteProtocolError(f"not JSON: {type(exc).__name__}") from None
    if not isinstance(body, dict):
        raise ZygoteProtocolError("a packet is a JSON object")
    version = body.pop("v", None)
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise ZygoteProtocolError(f"protocol version is not {PROTOCOL_VERSION}")
    op = body.pop("op", None)
    cls = _OPS.get(op) if isinstance(op, str) else None
    if cls is None:
        raise ZygoteProtocolError("unknown op")
    if body.keys() != {f.name for f in dataclasses.fields(cls)}:
        raise ZygoteProtocolError(f"{op} has the wrong fields")
    # The constructor checks every field's type and range (``__post_init__``).
    message: ZygoteMessage = cls(**body)
    return message
