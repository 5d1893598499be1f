"""runner._core._renewal: the one renewal policy, rule by rule."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner._core._challenge import Challenge
from runner._core._renewal import (
    GiveUp,
    LogIn,
    LoginState,
    Rediscover,
    Refresh,
    RefreshFailure,
    Situation,
    UseStored,
    decide,
    effective_margin,
    login_state,
)
from runner._core._stored import STORE_VERSION, StoredLogin
from runner.errors import NeedsInteraction, RefreshFailed

NOW = 1_800_000_000.0
URL = "http://127.0.0.1:8123/mcp"
ISSUER = "http://127.0.0.1:8123"


def login(
    *,
    expires_at: float | None = NOW + 3600,
    refresh_token: str | None = "rt",
    access_token: str = "at",
    expires_in: int | None = 3600,
    client_id: str | None = "cid",
    metadata: bool = True,
    issuer: str = ISSUER,
    granted_by: str | None = None,
    scope: str | None = "read",
    server_url: str = URL,
) -> StoredLogin:
    tokens: dict[str, Any] = {"access_token": access_token, "token_type": "Bearer"}
    for key, value in (("refresh_token", refresh_token), ("expires_in", expires_in)):
        if value is not None:
            tokens[key] = value
    if scope is not None:
        tokens["scope"] = scope
    data: dict[str, Any] = {
        "version": STORE_VERSION,
        "server_url": server_url,
        "tokens": tokens,
        "expires_at": expires_at,
        "client_info": None
        if client_id is None
        else {"client_id": client_id, "redirect_uris": ["http://127.0.0.1:5000/callback"]},
        "oauth_metadata": {
            "issuer": issuer,
            "authorization_endpoint": f"{issuer}/authorize",
            "token_endpoint": f"{issuer}/token",
        }
        if metadata
        else None,
        "granted_by": granted_by,
    }
    return StoredLogin.from_dict(data)


def ask(stored: StoredLogin | None, **changes: Any) -> Any:
    situation = Situation(name="srv", stored=stored, server_url=URL, now=NOW)
    return decide(dataclasses.replace(situation, **changes))


# --- what is stored ---------------------------------------------------------------------------


def test_a_valid_token_is_used() -> None:
    stored = login()
    assert ask(stored) == UseStored(stored, "using its stored login")


def test_nothing_stored_is_a_login_with_the_configured_scope() -> None:
    decision = ask(None, scope="files:read")
    assert isinstance(decision, LogIn)
    assert decision.scope == "files:read"
    assert decision.client_info is None


@pytest.mark.parametrize(
    "changes",
    [{"server_url": "http://127.0.0.1:9/mcp"}, {"client_id": "configured"}],
    ids=["another server", "another client"],
)
def test_a_login_that_is_not_this_ones_is_ignored(changes: dict[str, Any]) -> None:
    decision = decide(
        Situation(
            name="srv",
            stored=login(),
            server_url=changes.get("server_url", URL),
            client_id=changes.get("client_id"),
            now=NOW,
        )
    )
    assert isinstance(decision, LogIn)
    assert decision.client_info is None


# --- the margin -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expires_at", "expected"),
    [(NOW + 61, UseStored), (NOW + 60, Refresh), (NOW, Refresh), (NOW - 1, Refresh)],
)
def test_within_the_margin_a_refreshable_token_is_refreshed(
    expires_at: float, expected: type
) -> None:
    assert isinstance(ask(login(expires_at=expires_at)), expected)


def test_the_margin_is_at_most_a_quarter_of_the_lifetime() -> None:
    short = login(expires_at=NOW + 20, expires_in=60)  # a 60 s token with 20 s left
    assert effective_margin(short, 60.0) == 15.0
    assert isinstance(ask(short), UseStored)  # not refreshed on every call
    assert isinstance(ask(login(expires_at=NOW + 14, expires_in=60)), Refresh)


def test_a_token_nothing_can_refresh_is_used_to_its_end() -> None:
    stored = login(expires_at=NOW + 1, refresh_token=None)
    assert effective_margin(stored, 60.0) == 0.0
    assert isinstance(ask(stored), UseStored)
    assert isinstance(ask(login(expires_at=NOW, refresh_token=None)), LogIn)


def test_a_token_without_expiry_is_valid_until_refused() -> None:
    assert isinstance(ask(login(expires_at=None)), UseStored)
    assert isinstance(ask(login(expires_at=None), rejected="at"), Refresh)
    assert isinstance(ask(login(expires_at=None, access_token="")), Refresh)


# --- refreshes that did not work --------------------------------------------------------------


@pytest.mark.parametrize("failure", [RefreshFailure.DEAD_GRANT, RefreshFailure.DEAD_CLIENT])
def test_a_dead_grant_is_a_login(failure: RefreshFailure) -> None:
    decision = ask(login(expires_at=NOW - 1), refresh_failure=failure)
    assert isinstance(decision, LogIn)
    reused = decision.client_info is not None
    assert reused is (failure is RefreshFailure.DEAD_GRANT)  # a dead client registers anew


@pytest.mark.parametrize("failure", list(RefreshFailure))
def test_a_refusal_while_the_token_is_valid_keeps_both(failure: RefreshFailure) -> None:
    stored = login(expires_at=NOW + 30)  # within the margin, not expired
    decision = ask(stored, refresh_failure=failure)
    assert isinstance(decision, UseStored)
    assert decision.login is stored


def test_a_failure_of_the_moment_asks_nobody() -> None:
    decision = ask(login(expires_at=NOW - 1), refresh_failure=RefreshFailure.UNAVAILABLE)
    assert isinstance(decision, GiveUp)
    assert isinstance(decision.error, RefreshFailed) and decision.error.temporary


def test_a_refusal_that_condemns_nothing_may_log_in_anew() -> None:
    decision = ask(login(expires_at=NOW - 1), refresh_failure=RefreshFailure.REFUSED)
    assert isinstance(decision, LogIn)
    assert decision.client_info is not None


def test_without_a_person_a_login_is_given_up() -> None:
    for stored, changes in [
        (None, {}),
        (login(expires_at=NOW - 1), {"refresh_failure": RefreshFailure.DEAD_GRANT}),
        (login(expires_at=NOW - 1, refresh_token=None), {}),
    ]:
        decision = ask(stored, interactive=False, **changes)
        assert isinstance(decision, GiveUp)
        assert isinstance(decision.error, NeedsInteraction)
    assert isinstance(ask(login(expires_at=NOW - 1), interactive=False), Refresh)


# --- issuers and lost metadata ----------------------------------------------------------------


def test_lost_metadata_is_looked_up_then_used() -> None:
    stored = login(expires_at=NOW - 1, metadata=False)
    assert ask(stored) == Rediscover(stored)
    found = stored.replace(oauth_metadata=login().oauth_metadata)
    assert ask(found, rediscovered=True) == Refresh(found)
    assert isinstance(ask(stored, rediscovered=True), LogIn)  # nothing found


def test_a_refresh_token_goes_only_to_its_issuer() -> None:
    moved = login(expires_at=NOW - 1, granted_by="http://127.0.0.1:9999")
    decision = ask(moved)
    assert isinstance(decision, LogIn)
    assert "changed" in decision.reason
    assert decision.client_info is None  # a registration belongs to its issuer too
    # A record without the field trusts the metadata it was stored with.
    assert login().granted_by == ISSUER
    assert isinstance(ask(login(expires_at=NOW - 1)), Refresh)


# --- challenges -------------------------------------------------------------------------------


def test_a_step_up_asks_for_the_union_of_held_and_challenged() -> None:
    step_up = Challenge(403, error="insufficient_scope", scope="read write")
    decision = ask(login(scope="read admin"), challenge=step_up)
    assert isinstance(decision, LogIn)
    assert decision.scope == "read admin write"
    assert decision.challenge is step_up
    configured = ask(login(scope=None), challenge=step_up, scope="mine")
    assert configured.scope == "mine read write"


def test_a_401_challenge_refreshes_a_refused_token_then_logs_in_with_its_scope() -> None:
    challenge = Challenge(401, scope="mcp:basic", resource_metadata=f"{ISSUER}/prm")
    assert isinstance(ask(login(), challenge=challenge, rejected="at"), Refresh)
    decision = ask(None, challenge=challenge)
    assert isinstance(decision, LogIn)
    assert decision.scope == "mcp:basic" and decision.challenge is challenge
    assert ask(None, challenge=challenge, scope="mine").scope == "mine"  # configured wins


# --- status agrees --------------------------------------------------------------------------


def test_status_is_the_policy_answer() -> None:
    def state(stored: StoredLogin | None) -> LoginState:
        return login_state(stored, name="srv", server_url=URL, client_id=None, now=NOW)

    assert state(login()) is LoginState.VALID
    assert state(login(expires_at=NOW + 30)) is LoginState.REFRESHABLE
    assert state(login(expires_at=NOW - 1, metadata=False)) is LoginState.REFRESHABLE
    assert state(login(expires_at=NOW - 1, refresh_token=None)) is LoginState.NEEDS_LOGIN
    assert state(None) is LoginState.NEEDS_LOGIN


_failures = st.none() | st.sampled_from(list(RefreshFailure))


@settings(max_examples=300, deadline=None)
@given(
    expires_at=st.none() | st.floats(min_value=NOW - 1e5, max_value=NOW + 1e5),
    refresh_token=st.none() | st.just("rt"),
    metadata=st.booleans(),
    failure=_failures,
    rediscovered=st.booleans(),
    interactive=st.booleans(),
    step_up=st.booleans(),
)
def test_every_situation_settles_and_never_condemns_quietly(
    expires_at: float | None,
    refresh_token: str | None,
    metadata: bool,
    failure: RefreshFailure | None,
    rediscovered: bool,
    interactive: bool,
    step_up: bool,
) -> None:
    stored = login(expires_at=expires_at, refresh_token=refresh_token, metadata=metadata)
    challenge = Challenge(403, "insufficient_scope", "more") if step_up else None
    decision = ask(
        stored,
        refresh_failure=failure,
        rediscovered=rediscovered,
        interactive=interactive,
        challenge=challenge,
    )
    if isinstance(decision, UseStored):
        assert decision.login is stored and not step_up
    if isinstance(decision, Refresh | Rediscover):
        assert failure is None and refresh_token is not None and not step_up
    if isinstance(decision, Rediscover):
        assert not rediscovered
    if isinstance(decision, LogIn):
        assert interactive
    if not interactive:
        assert not isinstance(decision, LogIn)
