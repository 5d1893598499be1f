"""The parent <-> child wire format: round trips, and rejection of anything else."""

from __future__ import annotations

import json

import pytest

from runner._core import _messages as m
from runner.errors import (
    AuthorizationDenied,
    FlowCrashed,
    FlowError,
    FlowTimeout,
    error_from_wire,
)

EVERY_MESSAGE: list[m.Message] = [
    m.StartLogin(
        name="linear",
        server_url="http://127.0.0.1:1/mcp",
        redirect_host="127.0.0.1",
        redirect_port=2,
        callback_path="/callback",
        scope="read write",
        client_id=None,
        client_secret=None,
        client_name="test",
        time_left=1.5,
        configured_timeout=1.5,
        interactive=True,
        client_info={"client_id": "c", "redirect_uris": ["http://127.0.0.1:2/callback"]},
        challenge='Bearer error="insufficient_scope", scope="a b"',
        client_metadata_url="https://example.test/client.json",
        token_endpoint_auth_method="client_secret_basic",
    ),
    m.StartLogin(
        name="n",
        server_url="u",
        redirect_host="::1",
        redirect_port=65535,
        callback_path="/",
        scope=None,
        client_id="id",
        client_secret="secret",
        client_name="c",
        time_left=3,
        configured_timeout=3,
        interactive=False,
        flow="device",
    ),
    m.DeliverCallback(query="code=c&state=s"),
    m.Shutdown(),
    m.ServerReady(port=5555),
    m.AuthorizationStarted(url="http://127.0.0.1:9/authorize?state=s", state="s"),
    m.DeviceAuthorizationStarted(
        user_code="WDJB-MJHT",
        verification_uri="http://127.0.0.1:9/device",
        verification_uri_complete="http://127.0.0.1:9/device?user_code=WDJB-MJHT",
        expires_in=600.0,
    ),
    m.DeviceAuthorizationStarted(
        user_code="C",
        verification_uri="https://as.test/d",
        verification_uri_complete=None,
        expires_in=1,
    ),
    m.CallbackRejected(status=400, reason="state does not match"),
    m.CallbackAccepted(source="paste"),
    m.CallbackAccepted(source="device"),
    m.TokensIssued(record={"tokens": {"access_token": "t"}}, interactive=True),
    m.NotChallenged(status=200),
    m.LoginFailed(kind="FlowTimeout", message="too slow"),
]


@pytest.mark.parametrize("message", EVERY_MESSAGE, ids=lambda msg: type(msg).__name__)
def test_round_trip(message: m.Message) -> None:
    line = m.encode(message)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert m.decode(line) == message


def test_every_message_type_is_covered() -> None:
    covered = {type(msg) for msg in EVERY_MESSAGE}
    declared = set(m.ParentMessage.__args__) | set(m.ChildMessage.__args__)  # type: ignore[attr-defined]
    assert covered == declared


def test_lines_carry_the_protocol_version() -> None:
    body = json.loads(m.encode(m.Shutdown()))
    assert body == {"v": m.PROTOCOL_VERSION, "type": "Shutdown"}


# The current version's prefix: a line meant to be refused for its body must not be
# refused for its version instead.
CURRENT = b'{"v":%d,' % m.PROTOCOL_VERSION


@pytest.mark.parametrize(
    "line",
    [
        b"not json\n",
        b"[]\n",
        b'{"type":"Shutdown"}\n',  # no version
        b'{"v":999,"type":"Shutdown"}\n',
        b'{"v":%d,"type":"Shutdown"}\n' % (m.PROTOCOL_VERSION - 1),  # the previous version
        CURRENT + b'"type":"Reboot"}\n',
        CURRENT + b'"type":"ServerReady"}\n',  # missing field
        CURRENT + b'"type":"ServerReady","port":"80"}\n',  # wrong type
        CURRENT + b'"type":"ServerReady","port":true}\n',  # bool is not an int here
        CURRENT + b'"type":"ServerReady","port":1,"extra":2}\n',
        CURRENT + b'"type":"TokensIssued","record":[],"interactive":true}\n',
        CURRENT + b'"type":"StartLogin","name":"n"}\n',
    ],
)
def test_decode_rejects(line: bytes) -> None:
    with pytest.raises(m.ProtocolViolation):
        m.decode(line)


def test_decode_rejects_an_overlong_line() -> None:
    with pytest.raises(m.ProtocolViolation):
        m.decode(b" " * (m.MAX_LINE_BYTES + 1))


@pytest.mark.parametrize(
    "message",
    [
        m.DeliverCallback(query="code=SECRETCODE&state=SECRETSTATE"),
        m.TokensIssued(record={"access_token": "SECRETTOKEN"}, interactive=False),
        m.AuthorizationStarted(url="http://x/?state=SECRETSTATE", state="SECRETSTATE"),
        EVERY_MESSAGE[1],
    ],
)
def test_repr_hides_secrets(message: m.Message) -> None:
    text = repr(message)
    assert "SECRET" not in text and "secret" not in text.replace("client_secret", "")


@pytest.mark.parametrize("cls", [FlowTimeout, AuthorizationDenied, FlowError])
def test_errors_cross_the_wire_by_name(cls: type[FlowError]) -> None:
    error = cls("because")
    rebuilt = error_from_wire(**error.to_wire())
    assert type(rebuilt) is cls and rebuilt.message == "because"


def test_an_unknown_error_kind_is_a_crash() -> None:
    rebuilt = error_from_wire("SystemExit", "bye")
    assert isinstance(rebuilt, FlowCrashed) and "SystemExit" in rebuilt.message


@pytest.mark.parametrize(
    ("field", "value"),
    [("redirect_host", "example.com"), ("redirect_port", 0), ("callback_path", "callback")],
)
def test_a_start_login_that_names_no_loopback_listener_is_refused(
    field: str, value: object
) -> None:
    body = json.loads(m.encode(EVERY_MESSAGE[0]))
    body[field] = value
    with pytest.raises(m.ProtocolViolation, match=field):
        m.decode(json.dumps(body).encode() + b"\n")


def test_start_login_names_its_redirect_uri() -> None:
    first, second = EVERY_MESSAGE[0], EVERY_MESSAGE[1]
    assert isinstance(first, m.StartLogin) and isinstance(second, m.StartLogin)
    assert first.redirect_uri == "http://127.0.0.1:2/callback"
    assert second.redirect_uri == "http://[::1]:65535/"
