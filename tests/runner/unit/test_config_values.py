"""Config values that must never surprise: URLs checked in full when read, hermes's ``${VAR}``
interpolation, ports read as hermes reads them, expiries clamped to dates that format."""

from __future__ import annotations

import json
import math
import time
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mcp.shared.auth import OAuthToken

from runner import ServerSpec
from runner._cli._common import iso, when
from runner._core._entries import parse_hermes_config
from runner._core._stored import StoredLogin
from runner.errors import HermesConfigError, InvalidServerSpec

URL = "https://mcp.example.com/mcp"
#: 2100-01-01T00:00:00Z: ``runner._core._stored.MAX_EXPIRES_AT`` (imported in its own test,
#: so that every other test here runs, and fails for its own reason, on older code).
MAX_EXPIRES_AT = 4102444800.0


def test_the_latest_expiry_kept_is_2100() -> None:
    from runner._core import _stored

    assert _stored.MAX_EXPIRES_AT == MAX_EXPIRES_AT


def one(entry: dict[str, Any], **kwargs: Any) -> ServerSpec:
    config = parse_hermes_config({"mcp_servers": {"s": entry}}, source="cfg.yaml", **kwargs)
    (spec,) = config.specs
    return spec


def refused(entry: dict[str, Any], **kwargs: Any) -> str:
    with pytest.raises(HermesConfigError) as caught:
        parse_hermes_config({"mcp_servers": {"s": entry}}, source="cfg.yaml", **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("cfg.yaml: ") and "'s'" in message
    return message


# --- item 7: URLs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("https://mcp.example.com:99999/mcp", "port"),
        ("https://mcp.example.com:-1/mcp", "port"),
        ("https://mcp.example.com:0/mcp", "port 0"),
        ("https://mcp.example.com/m\ncp", "control character"),
        ("https://mcp.exa mple.com/mcp", "whitespace"),
        ("https://mcp.example.com/\udc80", "surrogate"),
        ("https://mcp.example.com/\x1b[2J", "control character"),
        ("ftp://mcp.example.com/mcp", "http(s)"),
        ("https:///mcp", "host"),
        ("https://[::1/mcp", "not a valid URL"),
        ("https://" + "a" * 9000 + ".com/", "longer than"),
    ],
)
def test_a_url_that_would_fail_at_login_time_is_refused_when_read(url: str, words: str) -> None:
    with pytest.raises(InvalidServerSpec) as caught:
        ServerSpec(name="s", url=url)
    assert words in str(caught.value)
    message = refused({"url": url, "auth": "oauth"})
    assert "url" in message and words in message


def test_a_url_with_user_info_is_refused_and_its_password_not_shown() -> None:
    message = refused({"url": "https://me:hunter2@mcp.example.com/mcp", "auth": "oauth"})
    assert "user info" in message
    assert "hunter2" not in message


@given(st.text(max_size=60).map(lambda tail: "https://" + tail))
def test_any_url_is_usable_or_one_invalid_server_spec(url: str) -> None:
    try:
        spec = ServerSpec(name="s", url=url)
    except InvalidServerSpec as exc:
        problem = str(exc)
        assert "\n" not in problem
        return
    parts = urlsplit(spec.url)
    assert parts.hostname and parts.port != 0
    assert parts.port is None or 1 <= parts.port <= 65535
    assert all(c.isprintable() and not c.isspace() for c in spec.url)


# --- item 1: ports read as hermes reads them ---------------------------------------------


@pytest.mark.parametrize("port", ["²", "1e3", " ", "8_0_", "9" * 5000])
def test_a_redirect_port_int_refuses_is_one_line(port: str) -> None:
    # "²" passes str.isdigit(), which the reader used to trust before int().
    message = refused({"url": URL, "auth": "oauth", "oauth": {"redirect_port": port}})
    assert "oauth.redirect_port" in message


@pytest.mark.parametrize(("port", "value"), [(" 8765 ", 8765), ("٣", 3), ("", 0)])
def test_a_redirect_port_string_is_read_as_hermes_reads_it(port: str, value: int) -> None:
    entry = {"url": URL, "auth": "oauth", "oauth": {"redirect_port": port}}
    assert one(entry).redirect_port == value  # int() as hermes; "" is unset


# --- item 6: ${VAR} as hermes interpolates it --------------------------------------------

ENV = {"MCP_HOST": "mcp.example.com", "CID": "client-1", "SECRET": "s3cr3t-value", "SC": "a b"}


def test_url_and_oauth_values_are_interpolated_as_hermes_does() -> None:
    spec = one(
        {
            "url": "https://${MCP_HOST}/mcp",
            "auth": "oauth",
            "oauth": {
                "client_id": "${ CID }",
                "client_secret": "${env:SECRET}",
                "scope": "${SC} ${userHome}",
            },
        },
        environ=ENV,
        context={"userHome": "/home/me"},
    )
    assert spec.url == URL
    assert spec.client_id == "client-1"
    assert spec.client_secret == "s3cr3t-value"
    assert spec.scope == "a b /home/me"


def test_a_value_is_not_interpolated_twice() -> None:
    spec = one(
        {"url": URL, "auth": "oauth", "oauth": {"client_id": "${CID}"}},
        environ={"CID": "${SECRET}", "SECRET": "no"},
    )
    assert spec.client_id == "${SECRET}"


@pytest.mark.parametrize(
    ("entry", "key"),
    [
        ({"url": "https://${NOPE}/mcp", "auth": "oauth"}, "url"),
        ({"url": URL, "auth": "oauth", "oauth": {"client_id": "${NOPE}"}}, "oauth.client_id"),
        (
            {"url": URL, "auth": "oauth", "oauth": {"client_id": "x", "client_secret": "${NOPE}"}},
            "oauth.client_secret",
        ),
        ({"url": URL, "auth": "oauth", "oauth": {"scope": "read ${env:NOPE}"}}, "oauth.scope"),
    ],
)
def test_an_unset_variable_is_one_line_naming_it_the_server_and_the_key(
    entry: dict[str, Any], key: str
) -> None:
    message = refused(entry, environ={"EMPTY": "", **ENV})
    assert "'NOPE'" in message and key in message
    assert "s3cr3t-value" not in message


def test_an_unset_variable_in_auth_or_enabled_is_left_as_hermes_leaves_it() -> None:
    # hermes keeps the placeholder: "${NOPE}" is not "oauth" (skipped), and not a false word
    # (enabled). Erring there would break a config hermes reads for a server not logged in to.
    config = parse_hermes_config(
        {
            "mcp_servers": {
                "a": {"url": URL, "auth": "${NOPE}"},
                "b": {"url": URL, "auth": "oauth", "enabled": "${NOPE}"},
                "c": {"command": "npx", "enabled": "${NOPE}"},
            }
        },
        source="cfg.yaml",
        environ={},
    )
    assert [s.name for s in config.specs] == ["b"]
    assert [n for n, _ in config.skipped] == ["a", "c"]


def test_an_interpolated_url_that_is_unusable_is_quoted_as_written() -> None:
    message = refused(
        {"url": "https://mcp.example.com/mcp?key=${KEY}", "auth": "oauth"},
        environ={"KEY": "s3cr3t value"},
    )
    assert "${KEY}" in message and "whitespace" in message
    assert "s3cr3t" not in message


def test_an_empty_variable_is_unset_as_hermes_keeps_its_placeholder() -> None:
    message = refused(
        {"url": URL, "auth": "oauth", "oauth": {"client_id": "${EMPTY}"}}, environ={"EMPTY": ""}
    )
    assert "'EMPTY'" in message


def test_keys_not_read_here_are_not_interpolated_nor_checked() -> None:
    spec = one(
        {"url": URL, "auth": "oauth", "headers": {"Authorization": "Bearer ${UNSET_TOKEN}"}},
        environ={},
    )
    assert spec.url == URL


def test_the_public_reader_interpolates_from_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from runner import hermes_config

    monkeypatch.setenv("RUNNER_TEST_MCP_HOST", "mcp.example.com")
    config = hermes_config.parse_hermes_config(
        {"mcp_servers": {"s": {"url": "https://${RUNNER_TEST_MCP_HOST}/mcp", "auth": "oauth"}}}
    )
    assert config.specs[0].url == URL


def test_enabled_is_interpolated_before_it_is_read() -> None:
    config = parse_hermes_config(
        {"mcp_servers": {"s": {"url": URL, "auth": "oauth", "enabled": "${ON}"}}},
        source="cfg.yaml",
        environ={"ON": "false"},
    )
    assert config.specs == [] and config.skipped[0][0] == "s"


# --- item 2: expiries --------------------------------------------------------------------


def record(expires_at: object) -> dict[str, Any]:
    return {
        "version": 1,
        "server_url": URL,
        "tokens": {"access_token": "a", "token_type": "Bearer"},
        "expires_at": expires_at,
    }


@pytest.mark.parametrize("expires_at", [1e308, 2**62, 1.7e9 + 10**12, 253402300800.0])
def test_a_far_future_expiry_is_clamped_when_read_and_formats(expires_at: float) -> None:
    login = StoredLogin.from_dict(record(expires_at))
    assert login.expires_at == MAX_EXPIRES_AT
    assert when(login.expires_at, time.time())[:4] in ("2099", "2100")  # the local zone
    assert iso(login.expires_at) is not None


def test_a_far_future_expiry_is_clamped_when_made_and_stored() -> None:
    token = OAuthToken(access_token="a", token_type="Bearer", expires_in=10**12)
    login = StoredLogin(
        server_url=URL,
        tokens=token,
        expires_at=time.time() + 10**12,
        client_info=None,
        oauth_metadata=None,
    )
    assert login.expires_at == MAX_EXPIRES_AT
    assert StoredLogin.from_dict(login.to_dict()).expires_at == MAX_EXPIRES_AT


@given(st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**62), 2**62))
def test_any_stored_expiry_decodes_into_range_and_formats(expires_at: float) -> None:
    login = StoredLogin.from_dict(record(expires_at))
    assert login.expires_at is not None
    assert 0.0 <= login.expires_at <= MAX_EXPIRES_AT
    assert when(login.expires_at, 1.7e9)
    assert iso(login.expires_at)


@given(st.floats())
def test_when_and_iso_format_any_number(epoch: float) -> None:
    assert when(epoch, 1.7e9)
    if math.isfinite(epoch):
        assert iso(epoch)


# --- item 1: any tagged YAML value decodes or is one HermesConfigError --------------------

YAML_TAGS = ["!!int", "!!float", "!!bool", "!!timestamp", "!!binary", "!!null", "!!str"]
YAML_TAGS += ["!!set", "!!omap", "!!pairs", "!!seq", "!!map", "!!python/none", ""]


@given(
    st.sampled_from(YAML_TAGS),
    st.text(max_size=30),
    st.sampled_from(["{v}", "[{v}]", "{{k: {v}}}", "<<: {v}", "? {v}\n: 1"]),
)
def test_any_tagged_yaml_value_decodes_or_is_one_config_error(
    tag: str, text: str, shape: str
) -> None:
    from runner._hosts._hermes_config import _decode, _first_unbuilt

    value = f"{tag} {json.dumps(text)}"
    document = "mcp_servers:\n  s:\n    oauth:\n      x: " + shape.format(v=value) + "\n"
    try:
        problem = _first_unbuilt(_decode(document.encode("utf-8", "surrogatepass"), "c.yaml"))
    except HermesConfigError as exc:
        problem = str(exc)
    assert problem is None or "\n" not in problem
