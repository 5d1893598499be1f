"""The parent's state machine for one login."""

from __future__ import annotations

import pytest

from runner import messages as m
from runner.lifecycle import LoginState, next_state

S = LoginState
READY = m.ServerReady(port=1)
STARTED = m.AuthorizationStarted(url="u", state="s")
REJECTED = m.CallbackRejected(status=400, reason="r")
ACCEPTED = m.CallbackAccepted(source="http")
TOKENS = m.TokensIssued(login={}, interactive=True)
FAILED = m.LoginFailed(kind="FlowTimeout", message="m")


def run(*events: m.Message) -> LoginState:
    state = S.STARTING
    for event in events:
        state = next_state(state, event)
    return state


def test_a_browser_login() -> None:
    assert run(READY, STARTED, REJECTED, REJECTED, ACCEPTED, TOKENS) is S.SUCCEEDED


def test_a_silent_login_needs_no_person() -> None:
    assert run(READY, TOKENS) is S.SUCCEEDED


@pytest.mark.parametrize(
    "events",
    [(FAILED,), (READY, FAILED), (READY, STARTED, FAILED), (READY, STARTED, ACCEPTED, FAILED)],
)
def test_failure_is_allowed_from_any_live_state(events: tuple[m.ChildMessage, ...]) -> None:
    assert run(*events) is S.FAILED


@pytest.mark.parametrize(
    "events",
    [
        (TOKENS,),  # tokens before the server even listened
        (STARTED,),
        (READY, READY),
        (READY, ACCEPTED),  # a callback before any authorization URL
        (READY, STARTED, STARTED),
        (READY, STARTED, TOKENS),  # tokens without a callback
        (READY, STARTED, ACCEPTED, REJECTED),
        (READY, TOKENS, FAILED),  # nothing after a final state
        (READY, FAILED, TOKENS),
        (m.Shutdown(),),  # a command: only the parent sends those
        (READY, m.DeliverCallback(query="q")),
    ],
)
def test_out_of_order_messages_are_violations(events: tuple[m.Message, ...]) -> None:
    with pytest.raises(m.ProtocolViolation):
        run(*events)


def test_final_states() -> None:
    assert {s for s in S if s.final} == {S.SUCCEEDED, S.FAILED}
