"""Judging an OAuth redirect that reaches a login's loopback listener, or is pasted.

Pure: no sockets, files, processes or logging. The child's HTTP server hands each request
to :func:`judge_request` (and answers with ``runner._core._pages``); a pasted callback forwarded by
the parent goes to :func:`judge_paste`, which reads it with ``runner._core._paste.parse_paste``.

Invariants:

* Only an :class:`Accepted` verdict may finish a login, and only a :class:`Denied` verdict
  may end it with ``AuthorizationDenied``; every :class:`Rejected` leaves the login waiting.
* Nothing is accepted or denied unless the listener is armed (``Expectation.state`` is
  known) and the response carries that exact state, compared in constant time on bytes.
* When the response's ``iss`` is wrong, or absent while the authorization server
  requires it, its ``error`` fields are neither shown nor acted on (RFC 9207 §2.4).
* A :class:`Rejected` reason is our own sentence and never quotes the request; the values
  of a :class:`Denied` are sanitised (below), because they reach pages, exception messages
  and a terminal.
* No ``repr`` of anything here shows an authorization code or a state.
* No module state: constants only (immutable).

Order of the checks in :func:`judge_request`, and why:

1. **Method** (405) and 2. **path** (404) first: they say whether the request is aimed at
   the callback at all. A browser's ``/favicon.ico``, a pre-connect or a port probe gets its
   answer without any parameter being read, so it can neither finish nor disturb the login
   (defects 3 and 4), and its answer reveals nothing about the login's state.
3. **Host** (400): a page on another site that rebinds its DNS name to 127.0.0.1 reaches
   this port with its own name in ``Host``; it is turned away before any parameter is read.
4. **Size** (414) before parsing, so the work done on hostile input is bounded.
5. **Syntax** (400): undecodable parameters and OAuth parameters sent more than once
   (RFC 6749 §3.1) make the response ambiguous, whatever the state of the listener.
6. **Armed** (503): without the login's state nothing can be judged; the browser may retry.
7. **State** (400) before anything the response *says*: a forged or stale response is not
   this login's, so neither its ``iss`` nor its ``error`` means anything (defect 5).
8. **Issuer** (400) before ``error``: an error from the wrong authorization server is a
   mix-up attack and must not end the login nor be shown (RFC 9207 §2.4).
9. **Error** (:class:`Denied`) before ``code``: an error response means no code is to be
   exchanged, even if one came along.
10. **Code** (400) must be present: 1*VSCHAR (RFC 6749 Appendix A.11).
11. :class:`Accepted`.

:func:`judge_paste` runs the same rules from 4 on: a paste has no method and no ``Host``,
but a pasted full URL must name the callback path.

Decisions:

* The query syntax (lenient in structure, strict in content, at most
  ``MAX_QUERY_FIELDS`` fields) is ``runner._core._callback_query``'s, shared with the paste
  reader. Parameters other than the six OAuth ones may repeat.
* The hosts a listener may serve, and how its ``Host`` header spells them, are
  ``runner._core._loopback``'s.
* An ``iss`` present while the issuer is not known is passed through in
  ``Accepted.iss`` for the SDK to validate against the metadata it fetches. An empty
  ``iss`` is malformed (400).
* A malformed ``error`` with the right state (and issuer) still ends the login as
  :class:`Denied`: the authorization server did answer, and waiting for the timeout would
  help nobody. Its values are sanitised, because they reach exception messages and a
  terminal: characters outside RFC 6749's NQSCHAR are replaced by ``?`` in ``error`` (an
  empty one becomes ``"unspecified_error"``); non-printable characters by ``?`` in
  ``error_description`` (printable non-ASCII is kept: some servers localise it); an
  ``error_uri`` that is not an absolute http(s) URI of URI characters is dropped. All three
  are length-capped.
* An ``error`` present together with a ``code`` is a :class:`Denied` (nothing is exchanged).
"""

from __future__ import annotations

import hmac
import urllib.parse
from dataclasses import dataclass
from typing import Final, TypeAlias

from runner._core._callback_query import MAX_QUERY_BYTES, parse_query
from runner._core._loopback import LOOPBACK_HOSTS, canonical_host, netloc_host
from runner._core._paste import PASTE_HINT, PasteProblem, parse_paste

__all__ = [
    "Accepted",
    "Denied",
    "Expectation",
    "Rejected",
    "Verdict",
    "judge_paste",
    "judge_request",
]

_MAX_ERROR_CHARS: Final[int] = 128
_MAX_DESCRIPTION_CHARS: Final[int] = 1024
_MAX_URI_CHARS: Final[int] = 2048

_OAUTH_PARAMS: Final[frozenset[str]] = frozenset(
    {"code", "state", "iss", "error", "error_description", "error_uri"}
)
_REDACTED: Final[str] = "<redacted>"
# "127.0.0.1, ::1 or localhost", for the message that refuses any other host.
_LOOPBACK_CHOICES: Final[str] = f"{', '.join(LOOPBACK_HOSTS[:-1])} or {LOOPBACK_HOSTS[-1]}"


# --------------------------------------------------------------------------- expectation


@dataclass(frozen=True, slots=True)
class Expectation:
    """What a login's listener is armed with.

    Args:
        host: the host of the redirect_uri: ``"127.0.0.1"``, ``"::1"`` (brackets allowed)
            or ``"localhost"`` (case-insensitive; stored as
            ``runner._core._loopback.canonical_host`` spells it: lower-case, no brackets).
        port: the listening port, 1..65535.
        path: the redirect_uri's path, e.g. ``"/callback"``; compared exactly.
        state: the state of the SDK's authorization URL; ``None`` until it is known.
        issuer: the authorization server's ``issuer`` from its metadata, if known.
        issuer_required: the server advertised
            ``authorization_response_iss_parameter_supported``; needs ``issuer``.

    Raises:
        ValueError: on any value outside the above.
    """

    host: str
    port: int
    path: str
    state: str | None = None
    issuer: str | None = None
    issuer_required: bool = False

    def __post_init__(self) -> None:
        host = canonical_host(self.host)
        if host not in LOOPBACK_HOSTS:
            raise ValueError(
                f"callback host {self.host!r} is not a loopback host this listener serves "
                f"(use {_LOOPBACK_CHOICES})"
            )
        object.__setattr__(self, "host", host)
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise ValueError(f"callback port must be an int, not {type(self.port).__name__}")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"callback port {self.port} is outside 1..65535")
        if not self.path.startswith("/") or any(c in self.path for c in "?# \t\r\n"):
            raise ValueError(f"callback path {self.path!r} must start with '/' and be a bare path")
        if self.state is not None and not self.state:
            raise ValueError("an armed state must not be empty")
        if self.issuer is not None and not self.issuer:
            raise ValueError("issuer must be None or a non-empty string")
        if self.issuer_required and self.issuer is None:
            raise ValueError("issuer_required needs the issuer to check iss against")

    @property
    def authority(self) -> str:
        """``host:port`` as the redirect_uri (and so the browser's ``Host``) spells it."""
        return f"{netloc_host(self.host)}:{self.port}"

    @property
    def redirect_uri(self) -> str:
        """``http://host:port/path``, the address the browser is sent to."""
        return f"http://{self.authority}{self.path}"

    def __repr__(self) -> str:
        state = None if self.state is None else _REDACTED
        return (
            f"Expectation(host={self.host!r}, port={self.port!r}, path={self.path!r}, "
            f"state={state}, issuer={self.issuer!r}, issuer_required={self.issuer_required!r})"
        )


# --------------------------------------------------------------------------- verdicts


@dataclass(frozen=True, slots=True)
class Accepted:
    """The response carries this login's state (and issuer) and a code: the login may finish."""

    code: str
    state: str
    iss: str | None

    def __repr__(self) -> str:
        return f"Accepted(code={_REDACTED}, state={_REDACTED}, iss={self.iss!r})"


@dataclass(frozen=True, slots=True)
class Denied:
    """A valid error response for this login: it ends with ``AuthorizationDenied`` at once.

    The values are sanitised (see the module docstring) and hold no secret.
    """

    error: str
    description: str | None
    uri: str | None


@dataclass(frozen=True, slots=True)
class Rejected:
    """Turned away: answer with ``status`` and ``reason``; the login keeps waiting.

    ``reason`` is our own sentence: it never quotes the request's parameters.
    """

    status: int
    reason: str

    def __post_init__(self) -> None:
        if not 400 <= self.status <= 599:
            raise ValueError(f"a rejection is a 4xx or 5xx status, not {self.status}")


Verdict: TypeAlias = Accepted | Denied | Rejected


# --------------------------------------------------------------------------- judging


def judge_request(
    method: str,
    target_path: str,
    raw_query: str,
    host_header: str | None,
    expect: Expectation,
) -> Verdict:
    """Judge one HTTP request that reached the login's listener.

    Args:
        method: the request method as sent (``"GET"``; compared case-sensitively).
        target_path: the path of the request target as sent, without the query (ASGI
            ``scope["raw_path"]`` decoded as latin-1); compared exactly with
            ``expect.path``, so ``/callback/``, ``/CALLBACK`` and ``/%63allback`` are 404.
        raw_query: the query as sent, without ``?`` (ASGI ``scope["query_string"]``).
        host_header: the ``Host`` header, or None when absent.
        expect: what the listener is armed with.

    Returns:
        The verdict; see the module docstring for the order of the rules.
    """
    if method != "GET":
        return Rejected(405, "this address only answers GET requests")
    if target_path != expect.path:
        return Rejected(404, "there is nothing at this address")
    if host_header is None or not host_header.strip(" \t"):
        return Rejected(400, "the request has no Host header")
    if not _host_matches(host_header, expect):
        return Rejected(400, f"this listener answers only requests addressed to {expect.authority}")
    return _judge_query(raw_query, expect)


def judge_paste(text: str, expect: Expectation) -> Verdict:
    """Judge a pasted callback that the parent forwarded to this login.

    There is no method and no ``Host`` to check; a pasted path (a full URL or
    ``/path?query``) must equal ``expect.path`` (404 otherwise); the URL's host and port are
    not checked (the browser may have been sent to a port nobody listened on, which is
    why the person pastes). Then the query rules of :func:`judge_request` apply.
    """
    pasted = parse_paste(text)
    if isinstance(pasted, PasteProblem):
        return Rejected(400, pasted.message or f"nothing was pasted; {PASTE_HINT}")
    if pasted.path is not None and pasted.path != expect.path:
        return Rejected(404, f"that URL is not this login's callback address ({expect.path})")
    return _judge_query(pasted.query, expect)


def _host_matches(host_header: str, expect: Expectation) -> bool:
    got = host_header.strip(" \t").lower()
    allowed = {expect.authority}
    if expect.port == 80:  # a browser leaves the default port out of Host
        allowed.add(netloc_host(expect.host))
    return got in allowed


def _judge_query(raw_query: str, expect: Expectation) -> Verdict:
    """Rules 4-11 of the module docstring."""
    if len(raw_query.encode("utf-8", "surrogatepass")) > MAX_QUERY_BYTES:
        return Rejected(414, "the callback address is too long")
    try:
        pairs = parse_query(raw_query)
    except ValueError:
        return Rejected(400, "the callback parameters cannot be read")
    params: dict[str, str] = {}
    for name, value in pairs:
        if name not in _OAUTH_PARAMS:
            continue
        if name in params:
            return Rejected(400, f"the parameter {name} appears more than once")
        params[name] = value

    if expect.state is None:
        return Rejected(503, "this login is not ready for its callback yet; try again in a moment")
    state = params.get("state")
    if not state or not hmac.compare_digest(_as_bytes(state), _as_bytes(expect.state)):
        return Rejected(
            400,
            "the state does not match this login; the address may be from an earlier or "
            "another login attempt",
        )

    iss = params.get("iss")
    if iss is not None:
        if not iss:
            return Rejected(400, "the response has an empty issuer (iss)")
        if expect.issuer is not None and iss != expect.issuer:
            return Rejected(
                400,
                "the response comes from another authorization server than the one this "
                "login started with (iss mismatch); it was ignored",
            )
    elif expect.issuer_required:
        return Rejected(
            400,
            "the response lacks the issuer (iss) that this authorization server always sends; "
            "it was ignored",
        )

    if "error" in params:
        return Denied(
            error=_sanitised_error(params["error"]),
            description=_sanitised_description(params.get("error_description")),
            uri=_sanitised_uri(params.get("error_uri")),
        )

    code = params.get("code")
    if not code:
        return Rejected(400, "the response has no authorization code")
    if not all(0x20 <= ord(c) <= 0x7E for c in code):
        return Rejected(400, "the authorization code is malformed")
    return Accepted(code=code, state=state, iss=iss)


def _as_bytes(value: str) -> bytes:
    # compare_digest on str accepts ASCII only; bytes work for any text.
    return value.encode("utf-8", "surrogatepass")


def _is_nqschar(c: str) -> bool:
    # RFC 6749 Appendix A: NQSCHAR = %x20-21 / %x23-5B / %x5D-7E
    o = ord(c)
    return 0x20 <= o <= 0x7E and c not in '"\\'


def _sanitised_error(value: str) -> str:
    cleaned = "".join(c if _is_nqschar(c) else "?" for c in value[:_MAX_ERROR_CHARS])
    return cleaned or "unspecified_error"


def _sanitised_description(value: str | None) -> str | None:
    if not value:
        return None
    return "".join(c if c.isprintable() else "?" for c in value[:_MAX_DESCRIPTION_CHARS])


def _sanitised_uri(value: str | None) -> str | None:
    # URI-reference characters per RFC 6749 Appendix A.3: %x21 / %x23-5B / %x5D-7E
    if not value or len(value) > _MAX_URI_CHARS:
        return None
    if not all(c != '"' and c != "\\" and 0x21 <= ord(c) <= 0x7E for c in value):
        return None
    try:
        parts = urllib.parse.urlsplit(value)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return value
