"""runner._core._revocation: which revocation requests logout sends (RFC 7009), where and with
which client authentication, and reading the answers (property-tested: never an exception)."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from runner._core._revocation import (
    MAX_REVOCATION_RESPONSE_BYTES,
    LogoutResult,
    TokenOutcome,
    read_answer,
    revocation_plan,
    second_try,
)
from runner._core._stored import STORE_VERSION, StoredLogin

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NOW = 1_800_000_000.0
ISSUER = "http://127.0.0.1:8123"
REVOKE_URL = "http://127.0.0.1:8123/revoke"


def record(
    *,
    method: str | None = "none",
    secret: str | None = None,
    client: bool = True,
    endpoint: str | None = REVOKE_URL,
    metadata: bool = True,
    refresh_token: str | None = "rt-1",
    granted_by: str | None = None,
) -> StoredLogin:
    tokens: dict[str, Any] = {"access_token": "at-1", "token_type": "Bearer"}
    if refresh_token is not None:
        tokens["refresh_token"] = refresh_token
    info: dict[str, Any] = {"client_id": "cid/1", "redirect_uris": ["http://127.0.0.1:5/cb"]}
    if method is not None:
        info["token_endpoint_auth_method"] = method
    if secret is not None:
        info["client_secret"] = secret
    meta: dict[str, Any] = {
        "issuer": ISSUER + "/",
        "authorization_endpoint": ISSUER + "/authorize",
        "token_endpoint": ISSUER + "/token",
    }
    if endpoint is not None:
        meta["revocation_endpoint"] = endpoint
    return StoredLogin.from_dict(
        {
            "version": STORE_VERSION,
            "server_url": ISSUER + "/mcp",
            "tokens": tokens,
            "expires_at": NOW,
            "client_info": info if client else None,
            "oauth_metadata": meta if metadata else None,
            "granted_by": granted_by,
        }
    )


# --- the plan ----------------------------------------------------------------------------------


def test_refresh_token_first_then_access_token_public_client() -> None:
    plan = revocation_plan(record())
    assert [r.token for r in plan.requests] == ["refresh_token", "access_token"]
    first, second = plan.requests
    assert first.url == REVOKE_URL and plan.endpoint == REVOKE_URL
    assert dict(first.form) == {
        "token": "rt-1",
        "token_type_hint": "refresh_token",
        "client_id": "cid/1",
    }
    assert dict(second.form)["token"] == "at-1"
    assert "Authorization" not in first.headers
    assert plan.unsent == ()


def test_client_secret_post_sends_id_and_secret_in_the_body() -> None:
    (first, _) = revocation_plan(record(method="client_secret_post", secret="s3")).requests
    assert dict(first.form)["client_secret"] == "s3"
    assert "Authorization" not in first.headers


def test_client_secret_basic_sends_http_basic_with_url_encoded_parts() -> None:
    (first, _) = revocation_plan(record(method="client_secret_basic", secret="a:b%")).requests
    assert "client_secret" not in first.form
    scheme, encoded = first.headers["Authorization"].split(" ")
    assert scheme == "Basic"
    assert base64.b64decode(encoded).decode() == "cid%2F1:a%3Ab%25"
    assert dict(first.form)["client_id"] == "cid/1"  # the SDK's endpoint requires it


def test_no_refresh_token_revokes_the_access_token_only() -> None:
    plan = revocation_plan(record(refresh_token=None))
    assert [r.token for r in plan.requests] == ["access_token"]


@pytest.mark.parametrize(
    ("kwargs", "why", "withheld"),
    [
        ({"endpoint": None}, "offers no revocation endpoint", False),
        ({"metadata": False}, "offers no revocation endpoint", False),
        ({"granted_by": "http://127.0.0.1:9999"}, "did not grant it", True),
        ({"client": False}, "no client registration", True),
        ({"method": "private_key_jwt"}, "logout cannot do", True),
    ],
)
def test_nothing_is_sent_when_it_must_not_or_cannot_be(
    kwargs: dict[str, Any], why: str, withheld: bool
) -> None:
    plan = revocation_plan(record(**kwargs))
    assert plan.requests == ()
    assert [o.token for o in plan.unsent] == ["refresh_token", "access_token"]
    assert all(why in o.why and not o.sent and not o.revoked for o in plan.unsent)
    assert all(o.withheld is withheld for o in plan.unsent)


def test_the_granting_issuer_is_compared_without_its_trailing_slash() -> None:
    assert len(revocation_plan(record(granted_by=ISSUER + "/")).requests) == 2
    assert len(revocation_plan(record(granted_by=ISSUER)).requests) == 2


def test_no_repr_shows_a_token_or_a_secret() -> None:
    plan = revocation_plan(record(method="client_secret_post", secret="s3cr3t"))
    shown = repr(plan)
    assert "rt-1" not in shown and "at-1" not in shown and "s3cr3t" not in shown


# --- the answer --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "retry_after", "revoked", "temporary", "said"),
    [
        (200, b"", None, True, False, ""),
        (
            503,
            b"",
            "30",
            False,
            True,
            "HTTP 503, not revoked for now; it asked to try again in 30 s",
        ),
        (500, b"oops", None, False, True, "HTTP 500"),
        (429, b"", "Wed, 21 Oct 2015 07:28:00 GMT", False, True, "try again in 0 s"),
        (400, b'{"error": "unsupported_token_type"}', None, False, False, "cannot revoke it"),
        (401, b'{"error": "invalid_client"}', None, False, False, "HTTP 401 invalid_client"),
        (404, b"<html>", None, False, False, "HTTP 404"),
        (302, b"", None, False, False, "HTTP 302"),
    ],
)
def test_answers(
    status: int, body: bytes, retry_after: str | None, revoked: bool, temporary: bool, said: str
) -> None:
    outcome = read_answer("refresh_token", status, body, retry_after, now=NOW)
    assert outcome.revoked is revoked and outcome.temporary is temporary
    assert said in outcome.why
    assert str(outcome).startswith("revoked refresh token" if revoked else "refresh token not")


def test_an_error_code_is_quoted_only_when_it_is_one() -> None:
    outcome = read_answer("access_token", 400, b'{"error": "at-1\\"secret"}', None, now=NOW)
    assert "secret" not in outcome.why and outcome.why.endswith("HTTP 400")


@SETTINGS
@given(
    status=st.integers(min_value=-(2**40), max_value=2**40),
    body=st.binary(max_size=2048)
    | st.builds(lambda s: s.encode(), st.text(max_size=200))
    | st.sampled_from([b'{"error": "unsupported_token_type"}', b'{"error": 1}', b"[]"]),
    retry_after=st.none() | st.text(max_size=80),
    token=st.sampled_from(["refresh_token", "access_token"]),
)
@example(status=503, body=b"", retry_after="9" * 80, token="access_token")
@example(status=503, body=b"", retry_after="Fri, 31 Dec 9999 23:59:59 GMT", token="access_token")
@example(status=400, body=b"[" * 100_000, retry_after=None, token="access_token")
@example(status=400, body=b" " * MAX_REVOCATION_RESPONSE_BYTES + b"{}", retry_after=None, token="x")
def test_any_answer_is_an_outcome(
    status: int, body: bytes, retry_after: str | None, token: Any
) -> None:
    outcome = read_answer(token, status, body, retry_after, now=NOW)
    assert isinstance(outcome, TokenOutcome)
    assert outcome.revoked is (status == 200)
    assert outcome.revoked or outcome.why
    if outcome.retry_after is not None:
        assert 0 <= outcome.retry_after <= 86400
    assert outcome.temporary is (status in (429, 503) or 500 <= status <= 599)


# --- the result --------------------------------------------------------------------------------


def test_the_warning_names_what_stayed_alive_and_why() -> None:
    down = TokenOutcome("refresh_token", revoked=False, why="is the server down?", temporary=True)
    done = TokenOutcome("access_token", revoked=True)
    result = LogoutResult("notes", True, True, (down, done), REVOKE_URL)
    assert result.revoked == ("access_token",)
    assert result.alive == (down,)
    warning = result.warning()
    assert warning is not None
    assert "notes" in warning and "refresh token may still be alive" in warning
    assert REVOKE_URL in warning and "is the server down?" in warning


def test_no_endpoint_is_no_warning_but_a_withheld_token_is() -> None:
    no_endpoint = revocation_plan(record(endpoint=None)).unsent
    assert LogoutResult("n", True, True, no_endpoint).warning() is None
    mismatch = revocation_plan(record(granted_by="http://elsewhere.example")).unsent
    warning = LogoutResult("n", True, True, mismatch, REVOKE_URL).warning()
    assert warning is not None and "refresh token and access token" in warning


# --- the second try (the MCP SDK's endpoint wants a client_secret field) ---------------------


@pytest.mark.parametrize(
    ("method", "secret"), [("none", None), (None, None), ("client_secret_basic", "s")]
)
def test_a_body_without_a_secret_refused_invalid_request_is_sent_again_with_an_empty_one(
    method: str | None, secret: str | None
) -> None:
    (first, _) = revocation_plan(record(method=method, secret=secret)).requests
    refused = read_answer("refresh_token", 400, b'{"error": "invalid_request"}', None, now=NOW)
    again = second_try(first, refused)
    assert again is not None
    assert dict(again.form) == {**first.form, "client_secret": ""}
    assert again.headers == first.headers and again.url == first.url
    assert second_try(again, refused) is None  # once only


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (200, b""),
        (400, b'{"error": "unsupported_token_type"}'),
        (401, b'{"error": "invalid_request"}'),
        (503, b""),
    ],
)
def test_no_second_try_for_any_other_answer(status: int, body: bytes) -> None:
    (first, _) = revocation_plan(record()).requests
    assert second_try(first, read_answer("refresh_token", status, body, None, now=NOW)) is None


def test_no_second_try_when_the_secret_was_in_the_body() -> None:
    (first, _) = revocation_plan(record(method="client_secret_post", secret="s")).requests
    refused = read_answer("refresh_token", 400, b'{"error": "invalid_request"}', None, now=NOW)
    assert second_try(first, refused) is None


@SETTINGS
@given(
    method=st.sampled_from([None, "none", "client_secret_post", "client_secret_basic"]),
    secret=st.none() | st.text(max_size=20),
    granted_by=st.none() | st.sampled_from([ISSUER, ISSUER + "/", "https://other.example"]),
    refresh_token=st.none() | st.text(min_size=1, max_size=20),
    endpoint=st.none() | st.just(REVOKE_URL),
)
def test_any_stored_login_has_a_plan_that_keeps_tokens_at_their_issuer(
    method: str | None,
    secret: str | None,
    granted_by: str | None,
    refresh_token: str | None,
    endpoint: str | None,
) -> None:
    stored = record(
        method=method,
        secret=secret,
        granted_by=granted_by,
        refresh_token=refresh_token,
        endpoint=endpoint,
    )
    plan = revocation_plan(stored)
    outcomes = [r.token for r in plan.requests] + [o.token for o in plan.unsent]
    assert outcomes == (["refresh_token"] if refresh_token else []) + ["access_token"]
    if plan.requests:
        assert endpoint is not None and (granted_by or ISSUER).rstrip("/") == ISSUER
        for request in plan.requests:
            assert request.url == REVOKE_URL
            assert request.form["client_id"] == "cid/1"
            assert ("Authorization" in request.headers) is bool(
                method == "client_secret_basic" and secret
            )
            assert ("client_secret" in request.form) is bool(
                method == "client_secret_post" and secret
            )
