"""A server's OAuth challenge (``WWW-Authenticate: Bearer ...``), read and written. Pure.

An MCP server asks for a login by answering a request with HTTP 401, or asks for more
scopes with HTTP 403 and ``error="insufficient_scope"`` (RFC 6750 §3, MCP authorization
"Scope challenge handling"); the ``Bearer`` challenge may name the protected resource
metadata (``resource_metadata``, RFC 9728 §5.1) and the scopes the request needs
(``scope``). Any request may be answered so, not only ``initialize``: the host's provider
reads the challenge here and a login carries it to its child (``StartLogin.challenge``).

Guarantees:

- ``parse_challenge`` never raises, whatever the status and header (property-tested): it
  returns a ``Challenge`` or None. A header longer than ``MAX_HEADER_CHARS`` is not read
  (the status still counts). A parameter whose value is not of its kind (a scope with a
  quote, a ``resource_metadata`` that is not an absolute http(s) URL, an ``error`` that is
  not a token) is left out, never guessed at;
- 401 is always a challenge, with or without a header (the SDK treats it so); 403 is one
  only with ``error="insufficient_scope"``; every other status is not;
- ``Challenge.header()`` writes a header that ``parse_challenge`` reads back to the same
  challenge (round-trip, property-tested), with the scope it is given in place of its own;
- nothing here holds a secret: a challenge names scopes and URLs, never a token.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Final
from urllib.parse import urlsplit

__all__ = ["MAX_HEADER_CHARS", "Challenge", "parse_challenge", "union_scopes"]

#: The longest ``WWW-Authenticate`` header read; a real one is a few hundred characters.
MAX_HEADER_CHARS: Final = 8192
_MAX_URL_CHARS: Final = 2048
_MAX_SCOPE_CHARS: Final = 4096

# RFC 9110 §5.6.2 token and §5.6.4 quoted-string; RFC 6749 §3.3 scope-token (NQSCHAR).
_TCHARS: Final = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_TOKEN: Final = re.compile(_TCHARS)
_SEPARATORS: Final = re.compile(r"[ \t,]*")
_PARAM: Final = re.compile(
    rf'(?P<name>{_TCHARS})[ \t]*=[ \t]*(?:"(?P<quoted>(?:[^"\\]|\\.)*)"|(?P<token>{_TCHARS}))',
    re.DOTALL,
)
_TOKEN68: Final = re.compile(r"[A-Za-z0-9\-._~+/]+=*(?=[ \t]*(?:,|$))")
_UNESCAPE: Final = re.compile(r"\\(.)", re.DOTALL)
_SCOPE: Final = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+(?: [\x21\x23-\x5b\x5d-\x7e]+)*")
_ERROR: Final = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]{1,64}")


@dataclasses.dataclass(frozen=True)
class Challenge:
    """What a server's 401, or 403 ``insufficient_scope``, asked for.

    Attributes:
        status: 401 (a login, or a new token) or 403 (more scopes: a step-up).
        error: The ``error`` parameter (``invalid_token``, ``insufficient_scope``, ...).
        scope: The scopes the request needs, space-separated, as the server wrote them.
        resource_metadata: Where the server's protected resource metadata is (RFC 9728).
    """

    status: int
    error: str | None = None
    scope: str | None = None
    resource_metadata: str | None = None

    @property
    def step_up(self) -> bool:
        """Whether this asks for more scopes (403 ``insufficient_scope``), not a new login."""
        return self.status == 403 and self.error == "insufficient_scope"

    def header(self, *, scope: str | None = None) -> str:
        """The ``WWW-Authenticate`` value of this challenge, naming ``scope`` (the scopes a
        login decided to ask for) instead of the challenge's own when one is given."""
        params = [
            ("error", self.error),
            ("scope", scope if scope is not None else self.scope),
            ("resource_metadata", self.resource_metadata),
        ]
        written = ", ".join(f'{key}="{value}"' for key, value in params if value is not None)
        return f"Bearer {written}" if written else "Bearer"

    def to_wire(self) -> dict[str, object]:
        """The challenge as message fields (``runner._core._messages``)."""
        return dataclasses.asdict(self)


def union_scopes(*scopes: str | None) -> str | None:
    """The space-separated union of ``scopes``, first seen first; None when all are empty.

    A step-up asks for what is held and what is challenged together (MCP authorization,
    "Scope challenge handling"; SEP-2350), so that one operation's new scope does not cost
    another's.
    """
    merged: list[str] = []
    for scope in scopes:
        for item in (scope or "").split():
            if item not in merged:
                merged.append(item)
    return " ".join(merged) or None


def parse_challenge(status: int, header: str | None) -> Challenge | None:
    """The challenge in a response's status and ``WWW-Authenticate`` header, or None when
    the response does not ask for a login or for more scopes. Never raises."""
    if status not in (401, 403):
        return None
    params = _bearer_params(header) if isinstance(header, str) else {}
    error = _checked(params.get("error"), _ERROR)
    if status == 403 and error != "insufficient_scope":
        return None
    return Challenge(
        status=status,
        error=error,
        scope=_scope(params.get("scope")),
        resource_metadata=_url(params.get("resource_metadata")),
    )


def _checked(value: str | None, pattern: re.Pattern[str]) -> str | None:
    return value if value is not None and pattern.fullmatch(value) else None


def _scope(value: str | None) -> str | None:
    if value is None or len(value) > _MAX_SCOPE_CHARS:
        return None
    normal = " ".join(value.split())  # the server's order, one space between
    return normal if _SCOPE.fullmatch(normal) else None


def _url(value: str | None) -> str | None:
    if value is None or len(value) > _MAX_URL_CHARS or not value.isprintable():
        return None
    if any(c in value for c in ' "\\<>'):
        return None
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not host:
        return None
    return value


def _bearer_params(header: str) -> dict[str, str]:
    """The auth-params of the first ``Bearer`` challenge in ``header`` (RFC 9110 §11.6.1).

    A header may hold several challenges (``Basic realm="x", Bearer scope="y"``): an item
    is an auth-param (``name=value``), a token68 right after its scheme (``Basic abc==``),
    or else the name of the next scheme. The first value of a repeated parameter counts.
    Unreadable input ends the reading with what was read so far.
    """
    if len(header) > MAX_HEADER_CHARS:
        return {}
    params: dict[str, str] = {}
    scheme: str | None = None  # the challenge being read
    after_scheme = False  # nothing read yet since its name: a token68 may come
    at = 0
    while True:
        at = _SEPARATORS.match(header, at).end()  # type: ignore[union-attr]
        if at >= len(header):
            break
        param = _PARAM.match(header, at)
        if param is not None:
            name, quoted, token = param.group("name", "quoted", "token")
            value = token if quoted is None else _UNESCAPE.sub(r"\1", quoted)
            if scheme == "bearer":
                params.setdefault(name.lower(), value)
            at, after_scheme = param.end(), False
            continue
        token68 = _TOKEN68.match(header, at)
        if token68 is not None and after_scheme:
            at, after_scheme = token68.end(), False
            continue
        name = _TOKEN.match(header, at)
        if name is None:
            break  # neither a parameter nor a name: stop reading
        if scheme == "bearer":
            break  # the next challenge begins: the Bearer one is over
        scheme, after_scheme, at = name.group().lower(), True, name.end()
    return params
