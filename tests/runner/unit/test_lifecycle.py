"""The parent's state machine for one login, and the actions each message calls for."""

from __future__ import annotations

import pytest

from runner import events
from runner._core import _messages as m
from runner._core._lifecycle import (
    ArmPastes,
    CloseListenerCopy,
    Defer,
    DisarmPastes,
    Fail,
    LoginMachine,
    LoginState,
    MarkInteractive,
    OpenBrowser,
    Report,
    Save,
    Step,
    Succeed,
    next_state,
)
from runner._core._stored import STORE_VERSION
from runner.errors import AuthorizationDenied, FlowCrashed

S = LoginState
READY = m.ServerReady(port=1)
STARTED = m.AuthorizationStarted(url="u", state="s")
REJECTED = m.CallbackRejected(status=400, reason="r")
ACCEPTED = m.CallbackAccepted(source="http")
TOKENS = m.TokensIssued(record={}, interactive=True)
NOT_CHALLENGED = m.NotChallenged(status=200)
DEVICE = m.DeviceAuthorizationStarted(
    user_code="WDJB-MJHT",
    verification_uri="http://127.0.0.1:9/device",
    verification_uri_complete=None,
    expires_in=600.0,
)
APPROVED = m.CallbackAccepted(source="device")
FAILED = m.LoginFailed(kind="FlowTimeout", message="m")


def run(*events: m.Message) -> LoginState:
    state = S.STARTING
    for event in events:
        state = next_state(state, event)
    return state


def test_a_browser_login() -> None:
    assert run(READY, STARTED, REJECTED, REJECTED, ACCEPTED, TOKENS) is S.SUCCEEDED


def test_a_device_login() -> None:
    assert run(READY, DEVICE, APPROVED, TOKENS) is S.SUCCEEDED


def test_a_device_login_reports_the_code_and_neither_arms_pastes_nor_opens_a_browser() -> None:
    step = MACHINE.advance(S.LISTENING, DEVICE)
    assert step == Step(
        S.WAITING_FOR_USER,
        (
            MarkInteractive(),
            Report(
                events.DeviceCodeIssued(
                    "srv", "WDJB-MJHT", "http://127.0.0.1:9/device", None, 600.0
                )
            ),
        ),
    )
    assert str(step.actions[1].event) == (  # type: ignore[union-attr]
        "open http://127.0.0.1:9/device on any device and enter the code WDJB-MJHT"
    )


def test_a_device_approval_is_reported() -> None:
    step = MACHINE.advance(S.WAITING_FOR_USER, APPROVED)
    assert step == Step(
        S.EXCHANGING, (DisarmPastes(), Report(events.CallbackReceived("srv", "device")))
    )


def test_a_server_that_asks_for_no_login_is_a_success_without_tokens() -> None:
    assert run(READY, NOT_CHALLENGED) is S.SUCCEEDED
    step = MACHINE.advance(S.LISTENING, NOT_CHALLENGED)
    assert step == Step(
        S.SUCCEEDED,
        (Defer(), Report(events.NotChallenged("srv", 200))),
    )


@pytest.mark.parametrize(
    "events",
    [
        (FAILED,),
        (READY, FAILED),
        (READY, STARTED, FAILED),
        (READY, STARTED, ACCEPTED, FAILED),
        (READY, DEVICE, FAILED),
    ],
)
def test_failure_is_allowed_from_any_live_state(events: tuple[m.ChildMessage, ...]) -> None:
    assert run(*events) is S.FAILED


@pytest.mark.parametrize(
    "events",
    [
        (TOKENS,),  # tokens before the server even listened
        (READY, TOKENS),  # tokens without a person: a child never refreshes
        (READY, STARTED, NOT_CHALLENGED),  # no login needed, after asking for one
        (READY, NOT_CHALLENGED, TOKENS),
        (STARTED,),
        (READY, READY),
        (READY, ACCEPTED),  # a callback before any authorization URL
        (READY, STARTED, STARTED),
        (READY, STARTED, TOKENS),  # tokens without a callback
        (READY, DEVICE, TOKENS),  # tokens without an approval
        (READY, STARTED, DEVICE),  # two logins in one child
        (READY, DEVICE, DEVICE),
        (DEVICE,),  # before the child serves
        (READY, STARTED, ACCEPTED, REJECTED),
        (READY, NOT_CHALLENGED, FAILED),  # nothing after a final state
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


# --- the login machine: the actions of every transition ------------------------------------

URL = "http://127.0.0.1:4242/callback"
MACHINE = LoginMachine(name="srv", callback_url=URL)
LOGIN_RECORD = {
    "version": STORE_VERSION,
    "server_url": "http://127.0.0.1:1/mcp",
    "tokens": {"access_token": "a-token", "token_type": "Bearer"},
}


def test_server_ready_closes_the_parents_copy_and_says_where() -> None:
    step = MACHINE.advance(S.STARTING, READY)
    assert step == Step(S.LISTENING, (CloseListenerCopy(), Report(events.Listening("srv", URL))))


def test_authorization_started_arms_pastes_before_opening_the_browser() -> None:
    step = MACHINE.advance(S.LISTENING, m.AuthorizationStarted(url="https://as/auth", state="st"))
    assert step == Step(
        S.WAITING_FOR_USER,
        (
            MarkInteractive(),
            ArmPastes("st"),
            Report(events.WaitingForBrowser("srv")),
            OpenBrowser("https://as/auth"),
        ),
    )


def test_a_rejected_paste_is_reported_and_the_login_waits() -> None:
    step = MACHINE.advance(S.WAITING_FOR_USER, REJECTED)
    assert step == Step(S.WAITING_FOR_USER, (Report(events.PasteRefused("srv", "r")),))


def test_an_accepted_callback_disarms_pastes() -> None:
    step = MACHINE.advance(S.WAITING_FOR_USER, m.CallbackAccepted(source="paste"))
    assert step == Step(
        S.EXCHANGING, (DisarmPastes(), Report(events.CallbackReceived("srv", "paste")))
    )


@pytest.mark.parametrize(("state", "interactive"), [(S.EXCHANGING, True), (S.EXCHANGING, False)])
def test_tokens_succeed_before_they_are_saved(state: LoginState, interactive: bool) -> None:
    step = MACHINE.advance(state, m.TokensIssued(record=LOGIN_RECORD, interactive=interactive))
    assert step.state is S.SUCCEEDED
    succeed, save = step.actions
    assert isinstance(succeed, Succeed) and isinstance(save, Save)
    assert succeed.interactive is interactive
    assert succeed.login is save.login
    assert succeed.login.tokens.access_token == "a-token"


def test_tokens_that_do_not_decode_are_a_crash_not_a_success() -> None:
    step = MACHINE.advance(S.EXCHANGING, m.TokensIssued(record={"version": 1}, interactive=True))
    assert step.state is S.FAILED
    [fail] = step.actions
    assert isinstance(fail, Fail) and isinstance(fail.error, FlowCrashed)
    assert str(fail.error).startswith("srv: the child sent bad tokens")
    assert "a-token" not in str(fail.error)


@pytest.mark.parametrize("state", [s for s in S if not s.final])
def test_a_reported_failure_becomes_that_error(state: LoginState) -> None:
    step = MACHINE.advance(state, m.LoginFailed(kind="AuthorizationDenied", message="no"))
    assert step.state is S.FAILED
    [fail] = step.actions
    assert isinstance(fail, Fail) and type(fail.error) is AuthorizationDenied
    assert str(fail.error) == "no"


def test_an_unknown_error_kind_is_a_crash() -> None:
    [fail] = MACHINE.advance(S.LISTENING, m.LoginFailed(kind="Nope", message="x")).actions
    assert isinstance(fail, Fail) and isinstance(fail.error, FlowCrashed)


@pytest.mark.parametrize(
    ("state", "message"),
    [
        (S.STARTING, TOKENS),
        (S.LISTENING, ACCEPTED),
        (S.WAITING_FOR_USER, TOKENS),
        (S.SUCCEEDED, FAILED),
        (S.LISTENING, m.Shutdown()),
    ],
)
def test_a_message_out_of_turn_fails_the_login_instead_of_raising(
    state: LoginState, message: m.Message
) -> None:
    step = MACHINE.advance(state, message)
    assert step.state is S.FAILED
    [fail] = step.actions
    assert isinstance(fail, Fail) and isinstance(fail.error, FlowCrashed)
    assert str(fail.error).startswith("srv: the child broke the protocol")


def test_a_line_that_is_no_message_fails_the_login() -> None:
    step = MACHINE.advance(S.LISTENING, m.ProtocolViolation("not JSON"))
    assert step.state is S.FAILED
    [fail] = step.actions
    assert isinstance(fail, Fail) and isinstance(fail.error, FlowCrashed)
    assert str(fail.error) == "srv: the child broke the protocol: not JSON"


ALL_MESSAGES: tuple[m.Message, ...] = (
    READY,
    STARTED,
    DEVICE,
    REJECTED,
    ACCEPTED,
    m.TokensIssued(record=LOGIN_RECORD, interactive=True),
    TOKENS,  # an empty record: does not decode
    FAILED,
    m.Shutdown(),
    m.DeliverCallback(query="q"),
)


@pytest.mark.parametrize("state", list(S))
@pytest.mark.parametrize("message", ALL_MESSAGES, ids=lambda msg: type(msg).__name__)
def test_the_machine_agrees_with_the_table_and_ends_with_exactly_one_verdict(
    state: LoginState, message: m.Message
) -> None:
    step = MACHINE.advance(state, message)
    verdicts = [a for a in step.actions if isinstance(a, Succeed | Fail)]
    assert len(verdicts) == (1 if step.state.final else 0)
    if verdicts:
        assert isinstance(verdicts[0], Fail) == (step.state is S.FAILED)
    try:
        expected = next_state(state, message)
    except m.ProtocolViolation:
        expected = S.FAILED
    if not (isinstance(message, m.TokensIssued) and not message.record):
        assert step.state is expected
