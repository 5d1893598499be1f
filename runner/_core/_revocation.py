"""Token revocation (RFC 7009) at logout, written and read: which requests, and their answers.
Pure.

``runner._parent._logout`` holds the server's login lock, sends the POSTs and removes the
files; this module says what goes out and what came back, with no I/O and no clock (``now``
is passed in).

Invariants:

- ``revocation_plan`` sends a token only to the revocation endpoint of the issuer that
  granted it: the stored metadata's issuer must be ``StoredLogin.granted_by`` (compared as
  ``issuer_of`` writes issuers); otherwise nothing is sent and each token's outcome says why;
- the refresh token goes first (revoking it ends the grant; RFC 7009 §2.1 lets the server
  revoke the access tokens of that grant too), then the access token; each request carries
  one token, its ``token_type_hint`` and the client's own authentication, as the stored
  registration's ``token_endpoint_auth_method`` says: ``none`` (or none registered):
  ``client_id`` in the body; ``client_secret_post``: ``client_id`` and ``client_secret`` in
  the body; ``client_secret_basic``: an ``Authorization: Basic`` header (RFC 6749 §2.3.1)
  and ``client_id`` in the body, as the SDK's client sends its token requests and as the
  SDK's revocation endpoint requires;
- a request with no ``client_secret`` in its body (``none``, ``client_secret_basic``) that is
  answered 400 ``invalid_request`` is sent once more with an empty ``client_secret``
  (``second_try``): the MCP SDK's revocation endpoint (mcp 1.x to 2.3 at least) refuses a body
  without the field, and RFC 6749 §2.3.1 lets a client send an empty secret; a 400 revoked
  nothing, so nothing is lost by asking again;
- ``read_answer`` never raises, whatever the status, body and ``Retry-After``
  (property-tested, ``tests/runner/unit/test_revocation.py``), and reads at most
  ``MAX_REVOCATION_RESPONSE_BYTES`` of the body: 200 is revoked (RFC 7009 §2.2: an unknown
  or already invalid token is answered 200 too, and is dead either way); 503, 429 and other
  5xx are "not revoked for now" (``temporary``, with the ``Retry-After`` when one is given);
  400 ``unsupported_token_type`` is "cannot be revoked there"; anything else is not
  revoked, its status (and RFC 6749 error code, if readable) said;
- no message and no ``repr`` shows a token, a client secret or the server's answer
  (``RevocationRequest`` hides its form and headers; only an error code is quoted).
"""

from __future__ import annotations

import base64
import dataclasses
import email.utils
import json
import re
import types
from collections.abc import Mapping
from typing import Final, Literal
from urllib.parse import quote

from runner._core._stored import StoredLogin, issuer_of

__all__ = [
    "MAX_REVOCATION_RESPONSE_BYTES",
    "LogoutResult",
    "RevocationPlan",
    "RevocationRequest",
    "TokenKind",
    "TokenOutcome",
    "read_answer",
    "revocation_plan",
    "second_try",
    "unsent",
]

TokenKind = Literal["refresh_token", "access_token"]
"""Which token an outcome is about (RFC 7009's ``token_type_hint`` values)."""

#: The largest revocation answer read. RFC 7009 answers 200 with an empty body, or an error
#: object of a few hundred bytes; anything beyond 64 KiB is not one.
MAX_REVOCATION_RESPONSE_BYTES: Final = 1 << 16
#: The longest ``Retry-After`` honoured in a message (a day): beyond it, "later".
_MAX_RETRY_AFTER: Final = 86400.0
_KNOWN_AUTH_METHODS: Final[tuple[str | None, ...]] = (
    None,
    "none",
    "client_secret_post",
    "client_secret_basic",
)
# RFC 6749 §5.2 error codes are drawn from this set of characters; nothing else is quoted.
_ERROR_CODE: Final = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]{1,64}")
_WORDS: Final[Mapping[TokenKind, str]] = types.MappingProxyType(
    {"refresh_token": "refresh token", "access_token": "access token"}
)


@dataclasses.dataclass(frozen=True)
class RevocationRequest:
    """One token to POST to ``url`` as ``application/x-www-form-urlencoded``.

    ``form`` and ``headers`` hold the token (and a client secret, if any): they are left out
    of ``repr``.
    """

    token: TokenKind
    url: str
    form: Mapping[str, str] = dataclasses.field(repr=False)
    headers: Mapping[str, str] = dataclasses.field(repr=False)


@dataclasses.dataclass(frozen=True)
class TokenOutcome:
    """What became of one token at logout.

    Attributes:
        token: ``"refresh_token"`` or ``"access_token"``.
        revoked: The authorization server answered 200 to its revocation: it is dead.
        why: When not revoked, why, as a clause a person reads ("the revocation endpoint
            answered HTTP 503"); "" when revoked.
        sent: Whether a revocation request was sent (False: the endpoint is missing, the
            issuer does not match, no client to authenticate as).
        withheld: Not sent although the server offers revocation (the issuer does not
            match, no client to authenticate as): it stays alive there.
        temporary: Not revoked for now (5xx, 429, a network failure, a timeout): a later
            attempt could work. False when revoked or refused for good.
        retry_after: The seconds the server asked to wait (``Retry-After``), when it said.
        status: The HTTP status of the answer (None: no answer).
        code: The RFC 6749 error code of the answer, when it had a readable one.
    """

    token: TokenKind
    revoked: bool
    why: str = ""
    sent: bool = True
    withheld: bool = False
    temporary: bool = False
    retry_after: float | None = None
    status: int | None = None
    code: str | None = None

    @property
    def words(self) -> str:
        """``"refresh token"`` or ``"access token"``."""
        return _WORDS[self.token]

    def __str__(self) -> str:
        if self.revoked:
            return f"revoked {self.words}"
        return f"{self.words} not revoked: {self.why}"


@dataclasses.dataclass(frozen=True)
class RevocationPlan:
    """``requests`` to send, in order; ``unsent``: the outcome of each token not sent."""

    requests: tuple[RevocationRequest, ...]
    unsent: tuple[TokenOutcome, ...]
    endpoint: str | None


@dataclasses.dataclass(frozen=True)
class LogoutResult:
    """What ``runner.logout`` did for one server.

    Attributes:
        name: The server's name.
        had_login: A login was stored; its files are removed now (``removed``).
        removed: The login's files were removed (always, when there was one: logout is the
            user's word, whatever the server answered).
        tokens: Each stored token's outcome, refresh token first; empty without a login.
        endpoint: The revocation endpoint the tokens were sent to (None: not sent).
    """

    name: str
    had_login: bool
    removed: bool
    tokens: tuple[TokenOutcome, ...] = ()
    endpoint: str | None = None

    @property
    def revoked(self) -> tuple[TokenKind, ...]:
        """The tokens the server revoked."""
        return tuple(t.token for t in self.tokens if t.revoked)

    @property
    def alive(self) -> tuple[TokenOutcome, ...]:
        """The tokens that may still be valid at the server (not revoked, for any reason)."""
        return tuple(t for t in self.tokens if not t.revoked)

    @property
    def failed(self) -> tuple[TokenOutcome, ...]:
        """The tokens whose revocation was tried, or should have been, and did not happen:
        sent and not revoked, or withheld because the issuer did not match. A server that
        offers no revocation endpoint fails nothing (its tokens simply expire)."""
        return tuple(t for t in self.alive if t.sent or t.withheld)

    def warning(self) -> str | None:
        """One sentence naming what stayed alive at the server, or None when nothing failed."""
        failed = self.failed
        if not failed:
            return None
        what = " and ".join(t.words for t in failed)
        where = f" at {self.endpoint}" if self.endpoint else ""
        whys = "; ".join(f"{t.words}: {t.why}" for t in failed)
        return (
            f"{self.name}: logged out here, but its {what} may still be alive{where} "
            f"({whys}); revoke the client's access at the server if that matters"
        )


def unsent(stored: StoredLogin, why: str, *, withheld: bool) -> tuple[TokenOutcome, ...]:
    """Every token of ``stored`` as not sent, for ``why`` (``withheld``: see
    ``TokenOutcome``)."""
    return tuple(
        TokenOutcome(kind, revoked=False, why=why, sent=False, withheld=withheld)
        for kind in _kinds(stored)
    )


def _kinds(stored: StoredLogin) -> tuple[TokenKind, ...]:
    tokens = stored.tokens
    kinds: list[TokenKind] = []
    if tokens.refresh_token:
        kinds.append("refresh_token")
    if tokens.access_token:
        kinds.append("access_token")
    return tuple(kinds)


def revocation_plan(stored: StoredLogin) -> RevocationPlan:
    """The revocation requests for ``stored``'s tokens, refresh token first, or why none.

    Never raises: whatever cannot be sent is an outcome (``sent=False``) with its reason.
    """
    metadata = stored.oauth_metadata
    endpoint = None if metadata is None else metadata.revocation_endpoint
    if metadata is None or endpoint is None:
        return RevocationPlan(
            (), unsent(stored, "its server offers no revocation endpoint", withheld=False), None
        )
    url = str(endpoint)
    issuer = issuer_of(metadata)
    if stored.granted_by is not None and stored.granted_by.rstrip("/") != issuer:
        why = (
            f"not sent: the revocation endpoint's issuer ({issuer}) did not grant it "
            f"({stored.granted_by} did)"
        )
        return RevocationPlan((), unsent(stored, why, withheld=True), url)
    client = stored.client_info
    if client is None or not client.client_id:
        return RevocationPlan(
            (), unsent(stored, "not sent: no client registration is stored", withheld=True), url
        )
    method = client.token_endpoint_auth_method
    if method not in _KNOWN_AUTH_METHODS:
        why = f"not sent: the client authenticates with {method}, which logout cannot do"
        return RevocationPlan((), unsent(stored, why, withheld=True), url)
    base: dict[str, str] = {"client_id": client.client_id}
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    secret = client.client_secret
    if method == "client_secret_basic" and secret:
        pair = f"{quote(client.client_id, safe='')}:{quote(secret, safe='')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    elif method == "client_secret_post" and secret:
        base["client_secret"] = secret
    requests: list[RevocationRequest] = []
    for kind in _kinds(stored):
        value = (
            stored.tokens.refresh_token if kind == "refresh_token" else stored.tokens.access_token
        )
        assert value is not None  # _kinds lists only tokens that are there
        form = {"token": value, "token_type_hint": kind, **base}
        requests.append(
            RevocationRequest(
                token=kind,
                url=url,
                form=types.MappingProxyType(form),
                headers=types.MappingProxyType(dict(headers)),
            )
        )
    return RevocationPlan(tuple(requests), (), url)


def read_answer(
    token: TokenKind, status: int, body: bytes, retry_after: str | None, *, now: float
) -> TokenOutcome:
    """The outcome of revoking ``token`` from the endpoint's answer; never raises.

    ``body`` beyond ``MAX_REVOCATION_RESPONSE_BYTES`` is not read; ``now`` turns an HTTP
    date in ``Retry-After`` into seconds.
    """
    if status == 200:
        return TokenOutcome(token, revoked=True)
    code = _error_code(body) if 400 <= status <= 499 else None
    said = f"HTTP {status}{f' {code}' if code else ''}"
    if status == 400 and code == "unsupported_token_type":
        return TokenOutcome(token, revoked=False, why=f"the server cannot revoke it there ({said})")
    if status in (429, 503) or 500 <= status <= 599:
        wait = _retry_after(retry_after, now=now) if status in (429, 503) else None
        later = f"; it asked to try again in {wait:g} s" if wait is not None else ""
        return TokenOutcome(
            token,
            revoked=False,
            why=f"the revocation endpoint answered {said}, not revoked for now{later}",
            temporary=True,
            retry_after=wait,
            status=status,
        )
    return TokenOutcome(
        token,
        revoked=False,
        why=f"the revocation endpoint answered {said}",
        status=status,
        code=code,
    )


def second_try(request: RevocationRequest, outcome: TokenOutcome) -> RevocationRequest | None:
    """``request`` again with an empty ``client_secret`` when it had none in its body and
    was answered 400 ``invalid_request`` (see the module docstring); else None."""
    if (
        outcome.status != 400
        or outcome.code != "invalid_request"
        or "client_secret" in request.form
    ):
        return None
    return dataclasses.replace(
        request, form=types.MappingProxyType({**request.form, "client_secret": ""})
    )


def _error_code(body: bytes) -> str | None:
    """The RFC 6749 §5.2 ``error`` code of an error answer, if it has a readable one."""
    if len(body) > MAX_REVOCATION_RESPONSE_BYTES:
        return None
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    code = data.get("error") if isinstance(data, dict) else None
    return code if isinstance(code, str) and _ERROR_CODE.fullmatch(code) else None


def _retry_after(value: str | None, *, now: float) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date), or None if unreadable."""
    if value is None:
        return None
    text = value.strip()[:64]
    if text.isascii() and text.isdigit():
        return min(float(int(text[:12])), _MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        return None
    try:
        seconds = when.timestamp() - now
    except (OverflowError, OSError, ValueError):
        return None
    return min(max(0.0, seconds), _MAX_RETRY_AFTER)
