"""The parent <-> child message protocol: one JSON object per line, versioned. Pure.

Both ends import this module and nothing else defines a message shape. Invariants:

- every line carries ``"v": PROTOCOL_VERSION`` and ``"type"``; a line with another
  version, an unknown type, missing or ill-typed fields is a ``ProtocolViolation``
  (the parent then treats the child as crashed: it never guesses);
- parent -> child messages are commands (``StartLogin``, ``DeliverCallback``,
  ``Shutdown``); child -> parent messages are past-tense facts (``ServerReady``,
  ``AuthorizationStarted``, ``DeviceAuthorizationStarted``, ``CallbackRejected``,
  ``CallbackAccepted``, ``TokensIssued``, ``NotChallenged``, ``LoginFailed``);
- secrets (tokens, client secrets, codes, pasted queries) never appear in ``repr``;
- a line is at most ``MAX_LINE_BYTES`` and nested at most ``MAX_NESTING`` deep; a longer
  or deeper one is a violation, not a buffer;
- ``decode`` raises nothing but ``ProtocolViolation``, whatever the bytes (bad UTF-8,
  ``NaN``/``Infinity``, which ``encode`` never writes, nesting beyond the recursion limit),
  and whatever it returns, ``encode`` can send again.

Bump ``PROTOCOL_VERSION`` whenever a message changes, and extend the round-trip test.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from runner._core._loopback import LOOPBACK_HOSTS, netloc_host

__all__ = [
    "FLOWS",
    "MAX_LINE_BYTES",
    "MAX_NESTING",
    "PROTOCOL_VERSION",
    "AuthorizationStarted",
    "CallbackAccepted",
    "CallbackRejected",
    "ChildMessage",
    "DeliverCallback",
    "DeviceAuthorizationStarted",
    "LoginFailed",
    "Message",
    "NotChallenged",
    "ParentMessage",
    "ProtocolViolation",
    "ServerReady",
    "Shutdown",
    "StartLogin",
    "TokensIssued",
    "decode",
    "encode",
]

PROTOCOL_VERSION: Final = 5
MAX_LINE_BYTES: Final = 1 << 20
#: The deepest nesting a line may have. The deepest message, a login record inside
#: ``TokensIssued.record``, is under ten levels; ``runner._core._stored`` refuses records deeper
#: than 32. The bound keeps ``encode`` (which recurses) from failing
#: on a value ``decode`` accepted.
MAX_NESTING: Final = 64
_MAX_PORT: Final = 65535
#: The login flows a ``StartLogin`` may ask for (``ServerSpec.flow``).
FLOWS: Final = ("browser", "device")


class ProtocolViolation(Exception):
    """Raised when a line is not a valid message of this protocol version."""


# --- parent -> child: commands -------------------------------------------------------


@dataclass(frozen=True)
class StartLogin:
    """Run one login. Sent once, first.

    The redirect URI is given as its parts (``redirect_host``, ``redirect_port``,
    ``callback_path``), checked here, so the child never re-parses a URI to learn where
    it listens. ``time_left`` is how long the child has, counted from when it reads
    this; ``configured_timeout`` is the login's configured timeout, for messages only.

    What the parent decided (``runner._core._renewal``, ``runner._core._identity``):
    ``scope`` is asked for as it is (None: the SDK chooses); ``challenge`` is the
    ``WWW-Authenticate`` value of the server's challenge that started this login (None: the
    child asks the server itself with an ``initialize``); ``client_info`` is a stored
    registration the child may reuse (never tokens: a child logs in afresh and never
    refreshes);
    ``client_metadata_url`` is the Client ID Metadata Document to present, when the
    leased port is one it names; ``token_endpoint_auth_method`` is the configured method
    of a pre-registered client (None: chosen from what the server supports). ``flow`` is
    ``"browser"`` (the authorization code grant, through the listener) or ``"device"`` (the
    device authorization grant, RFC 8628: the listener serves no callback).
    """

    name: str
    server_url: str
    redirect_host: str
    redirect_port: int
    callback_path: str
    scope: str | None
    client_id: str | None
    client_secret: str | None = field(repr=False)
    client_name: str
    time_left: float
    configured_timeout: float
    interactive: bool
    client_info: dict[str, Any] | None = field(default=None, repr=False)
    challenge: str | None = None
    client_metadata_url: str | None = None
    token_endpoint_auth_method: str | None = None
    flow: str = "browser"

    def __post_init__(self) -> None:
        if self.flow not in FLOWS:
            raise ProtocolViolation("StartLogin.flow is not a known flow")
        if self.redirect_host not in LOOPBACK_HOSTS:
            raise ProtocolViolation("StartLogin.redirect_host is not a loopback host")
        if not 0 < self.redirect_port <= _MAX_PORT:
            raise ProtocolViolation("StartLogin.redirect_port is not a port")
        if not self.callback_path.startswith("/"):
            raise ProtocolViolation("StartLogin.callback_path does not start with '/'")

    @property
    def redirect_uri(self) -> str:
        """``http://HOST:PORT/path``, IPv6 in brackets: what the client registers."""
        host = netloc_host(self.redirect_host)
        return f"http://{host}:{self.redirect_port}{self.callback_path}"


@dataclass(frozen=True)
class DeliverCallback:
    """A callback the user pasted into the parent's terminal, routed here by its state."""

    query: str = field(repr=False)


@dataclass(frozen=True)
class Shutdown:
    """Stop serving and exit now, whatever the login's progress."""


# --- child -> parent: facts ----------------------------------------------------------


@dataclass(frozen=True)
class ServerReady:
    """The child serves HTTP on the inherited socket; the parent may close its copy."""

    port: int


@dataclass(frozen=True)
class AuthorizationStarted:
    """A person must open ``url``; callbacks carrying ``state`` belong to this login."""

    url: str = field(repr=False)
    state: str = field(repr=False)


@dataclass(frozen=True)
class DeviceAuthorizationStarted:
    """A device login began (RFC 8628): a person must open ``verification_uri`` on any
    device and enter ``user_code`` (or open ``verification_uri_complete``, which carries
    it) within ``expires_in`` seconds. The device code itself never crosses the channel."""

    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: float


@dataclass(frozen=True)
class CallbackRejected:
    """A pasted callback was not accepted; ``reason`` is safe to show the user."""

    status: int
    reason: str


@dataclass(frozen=True)
class CallbackAccepted:
    """A valid callback arrived (``source``: "http" or "paste"); tokens are being fetched.
    ``source`` "device": a device login was approved (the token endpoint granted the device
    code); the tokens are being checked with the server."""

    source: str


@dataclass(frozen=True)
class TokensIssued:
    """The login succeeded. ``record`` is the login record the token store should keep
    (``runner._core._stored.StoredLogin`` as a dict)."""

    record: dict[str, Any] = field(repr=False)
    interactive: bool


@dataclass(frozen=True)
class NotChallenged:
    """The MCP server answered ``initialize`` (HTTP ``status``) without asking for a login:
    none is needed yet. The host logs in when the server first challenges a request."""

    status: int


@dataclass(frozen=True)
class LoginFailed:
    """The login failed; ``kind`` names a ``runner.errors`` class."""

    kind: str
    message: str


ParentMessage = StartLogin | DeliverCallback | Shutdown
ChildMessage = (
    ServerReady
    | AuthorizationStarted
    | DeviceAuthorizationStarted
    | CallbackRejected
    | CallbackAccepted
    | TokensIssued
    | NotChallenged
    | LoginFailed
)
Message = ParentMessage | ChildMessage

_TYPES: Final[Mapping[str, type[Any]]] = types.MappingProxyType(
    {
        cls.__name__: cls
        for cls in (
            StartLogin,
            DeliverCallback,
            Shutdown,
            ServerReady,
            AuthorizationStarted,
            DeviceAuthorizationStarted,
            CallbackRejected,
            CallbackAccepted,
            TokensIssued,
            NotChallenged,
            LoginFailed,
        )
    }
)


def encode(message: Message) -> bytes:
    """One line of JSON, newline-terminated."""
    body: dict[str, Any] = {"v": PROTOCOL_VERSION, "type": type(message).__name__}
    body.update(dataclasses.asdict(message))
    line = json.dumps(body, separators=(",", ":"), allow_nan=False).encode() + b"\n"
    if len(line) > MAX_LINE_BYTES:
        raise ProtocolViolation(f"{type(message).__name__} is {len(line)} bytes, over the limit")
    return line


def decode(line: bytes) -> Message:
    """Parse one line; raises ``ProtocolViolation`` for anything but a valid message."""
    if len(line) > MAX_LINE_BYTES:
        raise ProtocolViolation(f"line of {len(line)} bytes is over the limit")
    try:
        body = json.loads(line, parse_constant=_refuse_constant)
    except RecursionError:
        raise ProtocolViolation("JSON nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, huge int literals
        raise ProtocolViolation(f"not JSON: {exc}") from None
    _check_nesting(body)
    if not isinstance(body, dict):
        raise ProtocolViolation("a message is a JSON object")
    if body.pop("v", None) != PROTOCOL_VERSION:
        raise ProtocolViolation(f"protocol version is not {PROTOCOL_VERSION}")
    cls = _TYPES.get(str(body.pop("type", "")))
    if cls is None:
        raise ProtocolViolation("unknown message type")
    hints = typing.get_type_hints(cls)
    expected = {f.name for f in dataclasses.fields(cls)}
    required = {
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    if not required <= body.keys() <= expected:
        raise ProtocolViolation(f"{cls.__name__} has the wrong fields")
    for name, value in body.items():
        if not _has_type(value, hints[name]):
            raise ProtocolViolation(f"{cls.__name__}.{name} has the wrong type")
    message: Message = cls(**body)
    return message


def _refuse_constant(name: str) -> Any:
    # encode() writes no NaN or Infinity (allow_nan=False), so a line holding one was not
    # written by this protocol; accepting it would also hand a peer a value it cannot re-send.
    raise ValueError(f"{name} is not a JSON number")


def _check_nesting(body: object) -> None:
    """Refuse a body nested deeper than ``MAX_NESTING``; iterative, so it cannot recurse."""
    stack: list[tuple[object, int]] = [(body, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_NESTING:
            raise ProtocolViolation(f"a message is nested more than {MAX_NESTING} levels deep")
        if isinstance(value, dict):
            stack.extend((child, depth + 1) for child in value.values())
        elif isinstance(value, list):
            stack.extend((child, depth + 1) for child in value)


def _has_type(value: object, hint: Any) -> bool:
    """Whether a decoded JSON value fits a field's annotation (the few shapes used here)."""
    if hint is Any:
        return True
    if isinstance(hint, types.UnionType):
        return any(_has_type(value, arm) for arm in typing.get_args(hint))
    if hint is type(None):
        return value is None
    origin = typing.get_origin(hint)
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)
