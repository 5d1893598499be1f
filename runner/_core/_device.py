"""The OAuth device authorization grant (RFC 8628), written and read. Pure.

``runner._child._device`` sends the requests; this module says what goes out (the client's
authentication, the grant's form) and what came back: the device authorization response
(§3.2), the token endpoint's answers while it is polled (§3.5), and how long to wait before
the next poll. No I/O and no clock.

Invariants:

- ``read_authorization`` returns a ``DeviceAuthorization`` or raises ``OAuthProtocolError``;
  ``read_poll`` returns ``Pending``, ``SlowDown`` or ``Granted``, or raises
  ``AuthorizationDenied`` (``access_denied``), ``FlowTimeout`` (``expired_token``) or
  ``OAuthProtocolError`` (anything else), whatever the status and body (property-tested,
  ``tests/runner/unit/test_device.py``); ``device_endpoint`` returns a URL or None;
- the polling interval is never below ``MIN_INTERVAL`` whatever the server says, so a
  hostile or broken server cannot make a login hammer its token endpoint; ``slow_down``
  adds ``SLOW_DOWN_STEP`` seconds (§3.5);
- the device code is never in a ``repr`` nor in a message, and no message quotes the
  server's answer beyond an RFC 6749 error code (a description may hold anything).
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote, urlsplit

from mcp.shared.auth import OAuthToken
from pydantic import ValidationError

from runner.errors import AuthorizationDenied, FlowTimeout, OAuthProtocolError

__all__ = [
    "DEFAULT_INTERVAL",
    "DEVICE_GRANT",
    "MAX_RESPONSE_BYTES",
    "MIN_INTERVAL",
    "SLOW_DOWN_STEP",
    "DeviceAuthorization",
    "Granted",
    "Pending",
    "PollAnswer",
    "SlowDown",
    "client_auth",
    "device_endpoint",
    "next_interval",
    "read_authorization",
    "read_poll",
]

#: The grant type of a device code at the token endpoint (RFC 8628 §3.4).
DEVICE_GRANT: Final = "urn:ietf:params:oauth:grant-type:device_code"
#: The interval when the server names none (RFC 8628 §3.2).
DEFAULT_INTERVAL: Final = 5.0
#: The shortest wait between two polls, whatever the server says: a server asking for 0 s
#: (or a negative, or a tiny value) would otherwise be polled in a busy loop.
MIN_INTERVAL: Final = 1.0
#: What ``slow_down`` adds to the interval (RFC 8628 §3.5).
SLOW_DOWN_STEP: Final = 5.0
#: The largest response read from the device or token endpoint (one is a few hundred bytes).
MAX_RESPONSE_BYTES: Final = 1 << 20
# Codes and URIs are short; a longer one is no device authorization response.
_MAX_FIELD: Final = 2048


@dataclass(frozen=True)
class DeviceAuthorization:
    """A device authorization response (RFC 8628 §3.2), checked.

    Attributes:
        device_code: Polled with; never shown (not in ``repr``).
        user_code: What the person enters at ``verification_uri``.
        verification_uri: Where the person goes (http or https).
        verification_uri_complete: The same with the code in it, if the server gave one.
        expires_in: Seconds the codes live (positive, finite).
        interval: Seconds between polls, at least ``MIN_INTERVAL``.
    """

    device_code: str = field(repr=False)
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: float
    interval: float


@dataclass(frozen=True)
class Pending:
    """``authorization_pending``: nobody has approved yet; poll again after the interval."""


@dataclass(frozen=True)
class SlowDown:
    """``slow_down``: poll again, ``SLOW_DOWN_STEP`` seconds slower from now on."""


@dataclass(frozen=True)
class Granted:
    """The person approved: the token response (never shown in ``repr``)."""

    tokens: OAuthToken = field(repr=False)


PollAnswer = Pending | SlowDown | Granted


def _json_object(body: bytes) -> dict[str, Any] | None:
    if len(body) > MAX_RESPONSE_BYTES:
        return None
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # also UnicodeDecodeError, a ValueError
        return None
    return data if isinstance(data, dict) else None


def _web_url(value: object) -> str | None:
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_FIELD or not value.isprintable():
        return None
    try:
        parts = urlsplit(value)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or " " in value:
        return None
    return value


def _seconds(value: object) -> float | None:
    """A JSON number of seconds, positive and finite; None for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        seconds = float(value)
    except OverflowError:  # a huge int literal
        return None
    return seconds if math.isfinite(seconds) and seconds > 0 else None


def device_endpoint(document: bytes) -> str | None:
    """The ``device_authorization_endpoint`` of an authorization server metadata document
    (RFC 8628 §4), if it names a usable http(s) URL and, when the document lists
    ``grant_types_supported``, the device code grant is among them. The caller has already
    checked the document's issuer (``runner._core._discovery.read_server_metadata``)."""
    data = _json_object(document)
    if data is None:
        return None
    grants = data.get("grant_types_supported")
    if isinstance(grants, list) and DEVICE_GRANT not in grants:
        return None
    return _web_url(data.get("device_authorization_endpoint"))


def _code(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_FIELD or not value.isprintable():
        raise OAuthProtocolError(f"the device authorization response has no usable {key}")
    return value


def read_authorization(status: int, body: bytes) -> DeviceAuthorization:
    """The device authorization endpoint's answer (HTTP ``status``, ``body``).

    Raises:
        OAuthProtocolError: an error answer (its RFC 6749 code quoted, nothing else), or a
            body that is no device authorization response.
    """
    data = _json_object(body)
    if status != 200:
        error = _error_code(data)
        said = f" ({error})" if error else ""
        raise OAuthProtocolError(
            f"the device authorization endpoint refused the request: HTTP {status}{said}"
        )
    if data is None:
        raise OAuthProtocolError("the device authorization response is not a JSON object")
    device_code = _code(data, "device_code")
    user_code = _code(data, "user_code")
    uri = _web_url(data.get("verification_uri"))
    if uri is None:
        raise OAuthProtocolError("the device authorization response has no usable verification_uri")
    complete = data.get("verification_uri_complete")
    expires_in = _seconds(data.get("expires_in"))
    if expires_in is None:
        raise OAuthProtocolError("the device authorization response has no usable expires_in")
    raw_interval = data.get("interval")
    interval = DEFAULT_INTERVAL if raw_interval is None else _seconds(raw_interval)
    return DeviceAuthorization(
        device_code=device_code,
        user_code=user_code,
        verification_uri=uri,
        verification_uri_complete=_web_url(complete),
        expires_in=expires_in,
        # A zero, negative or unreadable interval is the floor, not the default: the server
        # meant "fast", and the floor is as fast as this client goes.
        interval=max(MIN_INTERVAL, interval if interval is not None else MIN_INTERVAL),
    )


def read_poll(status: int, body: bytes) -> PollAnswer:
    """The token endpoint's answer to one poll with the device code (RFC 8628 §3.5).

    Raises:
        AuthorizationDenied: ``access_denied``: the person refused.
        FlowTimeout: ``expired_token``: the codes expired before anyone approved.
        OAuthProtocolError: any other error, or a success that is no token response.
    """
    data = _json_object(body)
    if status == 200:
        if data is None:
            raise OAuthProtocolError("the token response is not a JSON object")
        try:
            tokens = OAuthToken.model_validate(data)
        except (ValidationError, ValueError, TypeError):
            raise OAuthProtocolError("the token response is not a valid token response") from None
        if not tokens.access_token:
            raise OAuthProtocolError("the token response has no access token")
        return Granted(tokens)
    error = _error_code(data)
    if error == "authorization_pending":
        return Pending()
    if error == "slow_down":
        return SlowDown()
    if error == "access_denied":
        raise AuthorizationDenied("the person refused the device login (access_denied)")
    if error == "expired_token":
        raise FlowTimeout("the device code expired before anyone approved it (expired_token)")
    said = f" ({error})" if error else ""
    raise OAuthProtocolError(f"the token endpoint refused the device code: HTTP {status}{said}")


def next_interval(interval: float, answer: PollAnswer | None) -> float:
    """The wait before the next poll: ``interval`` (floored at ``MIN_INTERVAL``), plus
    ``SLOW_DOWN_STEP`` after a ``SlowDown``. ``answer`` None is a poll that timed out, after
    which the interval doubles (RFC 8628 §3.5: back off on connection timeouts)."""
    current = interval if math.isfinite(interval) else MIN_INTERVAL
    current = max(MIN_INTERVAL, current)
    if answer is None:
        return current * 2
    if isinstance(answer, SlowDown):
        return current + SLOW_DOWN_STEP
    return current


def client_auth(
    client_id: str, secret: str | None, method: str | None
) -> tuple[dict[str, str], dict[str, str]]:
    """The form fields and headers that authenticate a client at the device authorization
    and token endpoints (RFC 6749 §2.3.1), as ``runner._core._refresh`` does for a refresh:
    ``client_id`` always; with a secret, an ``Authorization: Basic`` header for
    ``client_secret_basic`` (id and secret URL-encoded), the secret in the form for
    ``client_secret_post``; nothing more for ``none``."""
    form = {"client_id": client_id}
    headers: dict[str, str] = {}
    if secret and method == "client_secret_basic":
        pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    elif secret and method == "client_secret_post":
        form["client_secret"] = secret
    return form, headers


def _error_code(data: Mapping[str, Any] | None) -> str | None:
    """An RFC 6749 ``error`` code (only its safe characters, cut short), or None."""
    if data is None:
        return None
    error = data.get("error")
    if not isinstance(error, str) or not error:
        return None
    # RFC 6749 §5.2: error is %x20-21 / %x23-5B / %x5D-7E; anything else is not quoted.
    if len(error) > 64 or not all(0x20 <= ord(c) <= 0x7E and c not in '"\\' for c in error):
        return None
    return error
