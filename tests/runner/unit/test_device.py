"""The device authorization grant's pure part (runner._core._device): reading the device and
token endpoints' answers (property-tested: a value or the module's own errors, whatever the
input), the polling interval, client authentication; and ``flow`` in ServerSpec and entries."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner._core._device import (
    DEFAULT_INTERVAL,
    DEVICE_GRANT,
    MIN_INTERVAL,
    SLOW_DOWN_STEP,
    DeviceAuthorization,
    Granted,
    Pending,
    SlowDown,
    client_auth,
    device_endpoint,
    next_interval,
    read_authorization,
    read_poll,
)
from runner._core._entries import read_entry
from runner._core._spec import ServerSpec
from runner.errors import (
    AuthorizationDenied,
    FlowTimeout,
    HermesConfigError,
    InvalidServerSpec,
    OAuthProtocolError,
)

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
URL = "http://127.0.0.1:8123/mcp"


def body(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


GOOD = {
    "device_code": "dc-secret",
    "user_code": "WDJB-MJHT",
    "verification_uri": "https://as.test/device",
    "verification_uri_complete": "https://as.test/device?user_code=WDJB-MJHT",
    "expires_in": 600,
    "interval": 2,
}


# --- the device authorization response ---------------------------------------------------


def test_a_device_authorization_response_is_read() -> None:
    answer = read_authorization(200, body(**GOOD))
    assert answer == DeviceAuthorization(
        device_code="dc-secret",
        user_code="WDJB-MJHT",
        verification_uri="https://as.test/device",
        verification_uri_complete="https://as.test/device?user_code=WDJB-MJHT",
        expires_in=600.0,
        interval=2.0,
    )
    assert "dc-secret" not in repr(answer)


def test_the_interval_defaults_to_five_seconds_and_is_never_below_the_floor() -> None:
    without = {k: v for k, v in GOOD.items() if k != "interval"}
    assert read_authorization(200, body(**without)).interval == DEFAULT_INTERVAL == 5.0
    for hostile in (0, -3, 0.001, "fast", None, True, 1e-300):
        answer = read_authorization(200, body(**{**GOOD, "interval": hostile}))
        expected = DEFAULT_INTERVAL if hostile is None else MIN_INTERVAL
        assert answer.interval == expected, hostile
    assert MIN_INTERVAL == 1.0


@pytest.mark.parametrize(
    ("change", "missing"),
    [
        ({"device_code": ""}, "device_code"),
        ({"user_code": 5}, "user_code"),
        ({"verification_uri": "javascript:alert(1)"}, "verification_uri"),
        ({"verification_uri": "file:///etc/passwd"}, "verification_uri"),
        ({"expires_in": 0}, "expires_in"),
        ({"expires_in": "600"}, "expires_in"),
    ],
)
def test_an_unusable_device_authorization_response_is_refused(
    change: dict[str, Any], missing: str
) -> None:
    with pytest.raises(OAuthProtocolError, match=missing):
        read_authorization(200, body(**{**GOOD, **change}))


def test_a_refused_device_authorization_quotes_only_the_error_code() -> None:
    answer = body(error="invalid_client", error_description="secret=s3cr3t")
    with pytest.raises(OAuthProtocolError, match=r"HTTP 401 \(invalid_client\)") as caught:
        read_authorization(401, answer)
    assert "s3cr3t" not in str(caught.value)


def test_a_bad_verification_uri_complete_is_dropped_not_fatal() -> None:
    answer = read_authorization(200, body(**{**GOOD, "verification_uri_complete": "ftp://x"}))
    assert answer.verification_uri_complete is None


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
_fields = st.fixed_dictionaries(
    {},
    optional={
        key: st.one_of(st.just(value), _json) for key, value in {**GOOD, "error": "x"}.items()
    },
)


@SETTINGS
@given(status=st.integers(-(2**40), 2**40), raw=st.binary(max_size=200))
def test_any_bytes_are_a_device_authorization_or_a_protocol_error(status: int, raw: bytes) -> None:
    try:
        answer = read_authorization(status, raw)
    except OAuthProtocolError:
        return
    assert answer.interval >= MIN_INTERVAL


@SETTINGS
@given(status=st.sampled_from([200, 400, 401, 500]), fields=_fields)
def test_any_json_is_a_device_authorization_or_a_protocol_error(
    status: int, fields: dict[str, Any]
) -> None:
    try:
        answer = read_authorization(status, json.dumps(fields).encode())
    except OAuthProtocolError:
        return
    assert status == 200
    assert answer.interval >= MIN_INTERVAL and math.isfinite(answer.interval)
    assert answer.expires_in > 0 and math.isfinite(answer.expires_in)
    assert answer.verification_uri.startswith(("http://", "https://"))


# --- polling the token endpoint --------------------------------------------------------------


def test_the_polling_answers() -> None:
    assert read_poll(400, body(error="authorization_pending")) == Pending()
    assert read_poll(400, body(error="slow_down")) == SlowDown()
    with pytest.raises(AuthorizationDenied, match="access_denied"):
        read_poll(400, body(error="access_denied"))
    with pytest.raises(FlowTimeout, match="expired_token"):
        read_poll(400, body(error="expired_token"))
    with pytest.raises(OAuthProtocolError, match=r"HTTP 400 \(invalid_grant\)"):
        read_poll(400, body(error="invalid_grant", error_description="dc-secret"))
    granted = read_poll(200, body(access_token="at", token_type="bearer", expires_in=60))
    assert isinstance(granted, Granted) and granted.tokens.access_token == "at"
    assert "at" not in repr(granted).replace("Granted", "")


@pytest.mark.parametrize(
    "answer", [b"", b"[]", b"{", body(token_type="Bearer"), body(access_token=5)]
)
def test_a_success_that_is_no_token_response_is_a_protocol_error(answer: bytes) -> None:
    with pytest.raises(OAuthProtocolError):
        read_poll(200, answer)


@SETTINGS
@given(status=st.integers(-(2**40), 2**40), raw=st.binary(max_size=200))
def test_any_poll_answer_is_a_value_or_one_of_the_modules_errors(status: int, raw: bytes) -> None:
    try:
        answer = read_poll(status, raw)
    except (AuthorizationDenied, FlowTimeout, OAuthProtocolError):
        return
    assert isinstance(answer, Pending | SlowDown | Granted)


@SETTINGS
@given(
    status=st.sampled_from([200, 400, 401, 429, 503]),
    fields=st.dictionaries(
        st.sampled_from(["error", "access_token", "token_type", "expires_in", "scope"]),
        _json | st.sampled_from(["authorization_pending", "slow_down", "Bearer", "x"]),
    ),
)
def test_any_json_poll_answer_is_a_value_or_one_of_the_modules_errors(
    status: int, fields: dict[str, Any]
) -> None:
    try:
        answer = read_poll(status, json.dumps(fields).encode())
    except (AuthorizationDenied, FlowTimeout, OAuthProtocolError):
        return
    assert isinstance(answer, Pending | SlowDown) or status == 200


# --- the interval --------------------------------------------------------------------------


def test_the_next_interval() -> None:
    assert next_interval(2.0, Pending()) == 2.0
    assert next_interval(2.0, SlowDown()) == 2.0 + SLOW_DOWN_STEP == 7.0
    assert next_interval(2.0, None) == 4.0  # a poll that timed out: back off
    assert next_interval(0.0, Pending()) == MIN_INTERVAL


@given(
    interval=st.floats(allow_nan=True, allow_infinity=True),
    answer=st.sampled_from([Pending(), SlowDown(), None]),
)
def test_the_interval_never_goes_below_the_floor(interval: float, answer: Any) -> None:
    after = next_interval(interval, answer)
    assert after >= MIN_INTERVAL
    if isinstance(answer, SlowDown):
        assert after >= MIN_INTERVAL + SLOW_DOWN_STEP


# --- the metadata and the client -------------------------------------------------------------


def test_the_device_endpoint_comes_from_the_metadata() -> None:
    doc = {"issuer": "https://as.test", "device_authorization_endpoint": "https://as.test/d"}
    assert device_endpoint(json.dumps(doc).encode()) == "https://as.test/d"
    with_grants = {**doc, "grant_types_supported": ["authorization_code"]}
    assert device_endpoint(json.dumps(with_grants).encode()) is None
    with_device = {**doc, "grant_types_supported": [DEVICE_GRANT]}
    assert device_endpoint(json.dumps(with_device).encode()) == "https://as.test/d"
    assert device_endpoint(json.dumps({"issuer": "https://as.test"}).encode()) is None
    bad = {**doc, "device_authorization_endpoint": "javascript:x"}
    assert device_endpoint(json.dumps(bad).encode()) is None
    assert device_endpoint(b"\xff") is None


def test_client_authentication() -> None:
    assert client_auth("c", None, "none") == ({"client_id": "c"}, {})
    assert client_auth("c", "s", "client_secret_post") == (
        {"client_id": "c", "client_secret": "s"},
        {},
    )
    form, headers = client_auth("c:1", "s/2", "client_secret_basic")
    assert form == {"client_id": "c:1"}
    assert base64.b64decode(headers["Authorization"][6:]) == b"c%3A1:s%2F2"


# --- ServerSpec.flow and oauth.flow -----------------------------------------------------------


def test_a_spec_names_its_flow() -> None:
    assert ServerSpec(name="s", url=URL).flow == "browser"
    assert ServerSpec(name="s", url=URL, flow="device").flow == "device"
    with pytest.raises(InvalidServerSpec, match="flow must be 'browser' or 'device'"):
        ServerSpec(name="s", url=URL, flow="devices")


@pytest.mark.parametrize("hermes", [True, False])
def test_oauth_flow_maps_onto_the_spec(hermes: bool) -> None:
    entry: dict[str, Any] = {"url": URL, "auth": "oauth", "oauth": {"flow": " Device "}}
    read = read_entry("srv", entry, hermes_config=hermes, source="config.yaml")
    assert read.spec is not None and read.spec.flow == "device"
    assert not any("flow" in note for note in read.notes)
    # A device login presents no client metadata document (it has no redirect URI to declare).
    assert read.spec.client_metadata_url is None
    browser = read_entry("srv", {"url": URL, "auth": "oauth", "oauth": {"flow": None}},
                         hermes_config=hermes, source="config.yaml")  # fmt: skip
    assert browser.spec is not None and browser.spec.flow == "browser"


def test_an_unknown_oauth_flow_is_an_error_naming_the_key() -> None:
    entry = {"url": URL, "auth": "oauth", "oauth": {"flow": "magic"}}
    with pytest.raises(HermesConfigError, match=r"oauth\.flow must be 'browser' or 'device'"):
        read_entry("srv", entry, hermes_config=True, source="config.yaml")
