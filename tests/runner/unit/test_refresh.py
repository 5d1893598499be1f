"""runner._parent._refresher's pure part: the refresh request the SDK would send, reading the token
endpoint's answer (property-tested), and when a refresh may be sent again."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from runner._core._refresh import (
    RefreshRequest,
    refresh_request,
    refreshed_login,
    retry_delay,
)
from runner._core._stored import STORE_VERSION, StoredLogin
from runner.errors import OAuthProtocolError, RefreshFailed, RefreshRefused

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NOW = 1_800_000_000.0
SERVER_URL = "http://127.0.0.1:8123/mcp"
TOKEN_URL = "http://127.0.0.1:8123/token"


def record(
    *,
    expires_at: float | None = NOW + 3600,
    refresh_token: str | None = "rt-1",
    client: dict[str, Any] | None = None,
    metadata: bool = True,
    access_token: str = "at-1",
    scope: str | None = "user",
) -> StoredLogin:
    tokens: dict[str, Any] = {"access_token": access_token, "token_type": "Bearer"}
    if refresh_token is not None:
        tokens["refresh_token"] = refresh_token
    if scope is not None:
        tokens["scope"] = scope
    data: dict[str, Any] = {
        "version": STORE_VERSION,
        "server_url": SERVER_URL,
        "tokens": tokens,
        "expires_at": expires_at,
        "client_info": client
        if client is not None
        else {
            "client_id": "cid-1",
            "redirect_uris": ["http://127.0.0.1:5000/callback"],
            "token_endpoint_auth_method": "none",
        },
        "oauth_metadata": {
            "issuer": "http://127.0.0.1:8123/",
            "authorization_endpoint": "http://127.0.0.1:8123/authorize",
            "token_endpoint": TOKEN_URL,
        }
        if metadata
        else None,
    }
    return StoredLogin.from_dict(data)


# --- refresh_request ---------------------------------------------------------------------------


def test_a_public_client_sends_the_sdk_refresh_grant() -> None:
    request = refresh_request(record())
    assert request.url == TOKEN_URL
    assert dict(request.form) == {
        "grant_type": "refresh_token",
        "refresh_token": "rt-1",
        "client_id": "cid-1",
        "resource": SERVER_URL,
    }
    assert dict(request.headers) == {"Content-Type": "application/x-www-form-urlencoded"}


def test_the_resource_can_be_left_out() -> None:
    assert "resource" not in refresh_request(record(), with_resource=False).form


def test_client_secret_post_puts_the_secret_in_the_form() -> None:
    client = {"client_id": "cid-1", "client_secret": "s3cret",
              "token_endpoint_auth_method": "client_secret_post"}  # fmt: skip
    request = refresh_request(record(client=client))
    assert request.form["client_secret"] == "s3cret"
    assert request.form["client_id"] == "cid-1"
    assert "Authorization" not in request.headers


def test_client_secret_basic_sends_an_encoded_authorization_header() -> None:
    client = {"client_id": "c:d/1", "client_secret": "s&cr t",
              "token_endpoint_auth_method": "client_secret_basic"}  # fmt: skip
    request = refresh_request(record(client=client))
    assert "client_secret" not in request.form
    scheme, _, value = request.headers["Authorization"].partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(value).decode() == "c%3Ad%2F1:s%26cr%20t"


def test_a_secret_method_without_a_secret_sends_none_as_the_sdk_does() -> None:
    client = {"client_id": "cid-1", "token_endpoint_auth_method": "client_secret_post"}
    request = refresh_request(record(client=client))
    assert "client_secret" not in request.form and "Authorization" not in request.headers


def test_a_record_that_cannot_be_refreshed_is_refused() -> None:
    with pytest.raises(OAuthProtocolError):
        refresh_request(record(refresh_token=None))
    with pytest.raises(OAuthProtocolError):
        refresh_request(record(metadata=False))


def test_the_request_repr_shows_no_secret() -> None:
    client = {"client_id": "cid-1", "client_secret": "s3cret",
              "token_endpoint_auth_method": "client_secret_basic"}  # fmt: skip
    request = refresh_request(record(client=client, refresh_token="rt-SECRET"))
    assert isinstance(request, RefreshRequest)
    assert "SECRET" not in repr(request) and "s3cret" not in repr(request)


# --- refreshed_login ---------------------------------------------------------------------------


def answer(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def test_a_token_response_becomes_the_new_login() -> None:
    stored = record(expires_at=NOW - 5)
    new = refreshed_login(
        stored, 200, answer(access_token="at-2", token_type="bearer", expires_in=300,
                            refresh_token="rt-2", scope="user other"), now=NOW,
    )  # fmt: skip
    assert new.tokens.access_token == "at-2" and new.tokens.refresh_token == "rt-2"
    assert new.tokens.scope == "user other"
    assert new.expires_at == NOW + 300
    assert new.server_url == stored.server_url
    assert new.client_info == stored.client_info
    assert new.oauth_metadata == stored.oauth_metadata


def test_a_response_without_refresh_token_or_scope_keeps_the_old_ones() -> None:
    new = refreshed_login(record(), 200, answer(access_token="at-2", expires_in=60), now=NOW)
    assert new.tokens.refresh_token == "rt-1" and new.tokens.scope == "user"


def test_a_response_without_expires_in_has_no_expiry() -> None:
    assert refreshed_login(record(), 200, answer(access_token="at-2"), now=NOW).expires_at is None


def test_the_issuer_that_granted_the_login_is_kept() -> None:
    stored = record()
    assert stored.granted_by == "http://127.0.0.1:8123"
    assert refreshed_login(stored, 200, answer(access_token="at-2"), now=NOW).granted_by == (
        "http://127.0.0.1:8123"
    )


@pytest.mark.parametrize("status", [400, 401])
@pytest.mark.parametrize("code", ["invalid_grant", "invalid_client"])
def test_only_invalid_grant_and_invalid_client_condemn(status: int, code: str) -> None:
    body = answer(error=code, error_description="refresh token rt-1 is revoked")
    with pytest.raises(RefreshRefused) as caught:
        refreshed_login(record(), status, body, now=NOW)
    assert caught.value.code == code
    assert code in str(caught.value)
    assert "rt-1" not in str(caught.value)  # the description is not repeated


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, answer(error="invalid_request")),
        (400, answer(error="unauthorized_client")),
        (400, b"<html><body>Bad Request (proxy)</body></html>"),
        (401, b""),
        (403, answer(error="invalid_grant")),  # not a status RFC 6749 answers with
        (302, b""),
        (201, answer(access_token="at-2")),
    ],
    ids=["invalid_request", "unauthorized_client", "html", "bare 401", "403", "302", "201"],
)
def test_a_refusal_that_condemns_nothing_keeps_the_login(status: int, body: bytes) -> None:
    with pytest.raises(RefreshFailed) as caught:
        refreshed_login(record(), status, body, now=NOW)
    assert not caught.value.temporary
    assert "kept" in str(caught.value)


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 599])
def test_a_server_that_says_not_now_fails_temporarily(status: int) -> None:
    with pytest.raises(RefreshFailed) as caught:
        refreshed_login(record(), status, answer(error="invalid_grant"), now=NOW)
    assert caught.value.temporary


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        answer(token_type="Bearer"),
        answer(access_token=""),
        answer(access_token="at", token_type="mac"),
        answer(access_token="at", expires_in=10**30),
        b'{"access_token": "\\ud800"}',
        b"[" * 100_000,
    ],
)
def test_an_answer_that_is_no_token_response_keeps_the_login(body: bytes) -> None:
    with pytest.raises(RefreshFailed) as caught:
        refreshed_login(record(), 200, body, now=NOW)
    assert not caught.value.temporary


def test_errors_never_quote_the_response() -> None:
    body = answer(access_token=12345, refresh_token="LEAKED-TOKEN")
    with pytest.raises(RefreshFailed) as caught:
        refreshed_login(record(), 200, body, now=NOW)
    assert "LEAKED" not in str(caught.value)
    with pytest.raises(RefreshFailed) as caught:
        refreshed_login(record(), 400, answer(error="LEAKED TOKEN", x=1), now=NOW)
    assert "LEAKED" in str(caught.value)  # an error code is shown, as RFC 6749 defines it
    with pytest.raises(RefreshFailed) as caught:
        refreshed_login(record(), 400, answer(error='"quoted" rt-1'), now=NOW)
    assert "rt-1" not in str(caught.value)


# --- retry_delay -------------------------------------------------------------------------------


def test_only_a_429_is_sent_again() -> None:
    for status in (400, 401, 500, 503):
        assert retry_delay(status, "1", now=NOW) is None
    assert retry_delay(429, None, now=NOW) == 1.0
    assert retry_delay(429, "7", now=NOW) == 7.0
    assert retry_delay(429, "soon", now=NOW) is None


def test_retry_after_may_be_a_date() -> None:
    assert retry_delay(429, "Sun, 06 Nov 1994 08:49:37 GMT", now=784111777.0 - 5) == 5.0
    assert retry_delay(429, "Sun, 06 Nov 1994 08:49:37 GMT", now=784111777.0 + 5) == 0.0


@SETTINGS
@given(st.text(max_size=60))
def test_retry_after_never_raises(value: str) -> None:
    delay = retry_delay(429, value, now=NOW)
    assert delay is None or delay >= 0


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                  max_size=4),
    max_leaves=12,
)  # fmt: skip
_token_fields = st.fixed_dictionaries(
    {},
    optional={
        "access_token": st.text(max_size=30) | _json,
        "token_type": st.sampled_from(["Bearer", "bearer", "mac", ""]) | _json,
        "expires_in": st.integers() | st.floats() | _json,
        "refresh_token": st.text(max_size=30) | st.none() | _json,
        "scope": st.text(max_size=30) | st.none() | _json,
    },
)


@SETTINGS
@given(status=st.integers(min_value=-(2**70), max_value=2**70), body=st.binary(max_size=300))
@example(status=200, body=b'{"access_token": "a", "expires_in": 1e400}')
@example(status=200, body=b'{"access_token": "a", "expires_in": -9223372036854775809}')
def test_any_answer_is_a_login_or_one_of_the_two_errors(status: int, body: bytes) -> None:
    check_answer(status, body)


@SETTINGS
@given(fields=_token_fields, extra=st.dictionaries(st.text(max_size=8), _json, max_size=3))
def test_any_token_shaped_answer_is_a_login_or_refresh_failed(
    fields: dict[str, Any], extra: dict[str, Any]
) -> None:
    body = json.dumps({**extra, **fields}).encode()
    check_answer(200, body)


def check_answer(status: int, body: bytes) -> None:
    stored = record()
    try:
        new = refreshed_login(stored, status, body, now=NOW)
    except RefreshRefused as exc:
        code = exc.code
        assert status in (400, 401)
        assert code in ("invalid_grant", "invalid_client")
        return
    except RefreshFailed:
        return
    assert status == 200
    assert new.tokens.access_token
    assert new.tokens.refresh_token is not None
    # What is returned is what the store can keep and read back.
    again = StoredLogin.from_json(json.dumps(new.to_dict(), allow_nan=False).encode())
    assert again.tokens == new.tokens and again.expires_at == new.expires_at
