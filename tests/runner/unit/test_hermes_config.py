"""Reading hermes-agent's ``mcp_servers`` (pure) and hermes's token file name rule."""

from __future__ import annotations

from typing import Any

import pytest

from runner.errors import InvalidServerSpec
from runner.hermes_config import (
    HERMES_CIMD_URL,
    HermesConfigError,
    hermes_safe_name,
    parse_boolish,
    parse_hermes_config,
)

URL = "https://mcp.example.com/mcp"
OWN_DOCUMENT = "https://client.example.com/oauth/client.json"


def parse(servers: Any) -> Any:
    return parse_hermes_config({"mcp_servers": servers}, source="config.yaml")


def test_a_mixed_block_keeps_the_oauth_servers_and_says_why_it_skips_the_rest() -> None:
    config = parse(
        {
            "fs": {"command": "npx", "args": ["-y", "server-filesystem"]},
            "plain": {"url": URL},
            "keyed": {"url": URL, "headers": {"Authorization": "Bearer x"}},
            "off": {"url": URL, "auth": "oauth", "enabled": False},
            "off-word": {"url": URL, "auth": "oauth", "enabled": "no"},
            "linear": {
                "url": URL,
                "auth": " OAuth ",
                "timeout": 120,
                "connect_timeout": 30,
                "tools": {"include": ["a"]},
                "sampling": {"enabled": False},
                "headers": {"X-Trace": "1"},
                "oauth": {"scope": "read", "redirect_port": "8765", "timeout": "90"},
            },
            "broken": "not a mapping",
        }
    )
    assert [s.name for s in config.specs] == ["linear"]
    (spec,) = config.specs
    assert (spec.url, spec.scope, spec.redirect_port, spec.timeout) == (URL, "read", 8765, 90.0)
    skipped = dict(config.skipped)
    assert list(skipped) == ["fs", "plain", "keyed", "off", "off-word", "broken"]
    assert "stdio" in skipped["fs"]
    assert "auth: oauth" in skipped["plain"]
    assert "headers" in skipped["keyed"]
    assert "disabled" in skipped["off"] and "disabled" in skipped["off-word"]
    assert "not a mapping" in skipped["broken"]
    assert config.notes["linear"] == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, True),
        (True, True),
        (False, False),
        (0, False),
        (1, True),
        ("off", False),
        (" No ", False),
        ("on", True),
        ("maybe", True),
        ([], True),
    ],
)
def test_enabled_is_read_the_way_hermes_reads_it(value: object, expected: bool) -> None:
    assert parse_boolish(value) is expected


def test_keys_that_servers_spec_cannot_express_are_noted_not_dropped_silently() -> None:
    config = parse(
        {
            "x": {
                "url": URL,
                "auth": "oauth",
                "future_key": 1,
                "oauth": {"user_agent": "hermes", "cimd": None, "application_type": "web"},
            }
        }
    )
    notes = config.notes["x"]
    assert any("user_agent" in n for n in notes)
    assert any("application_type" in n for n in notes)
    assert any("future_key" in n for n in notes)
    assert not any("cimd" in n for n in notes)  # null is unset, as in hermes


def test_hermes_identifies_with_its_client_metadata_document_by_default() -> None:
    (spec,) = parse({"x": {"url": URL, "auth": "oauth"}}).specs
    assert spec.client_metadata_url == HERMES_CIMD_URL
    assert spec.client_metadata_ports == frozenset(range(27890, 27895))
    (own,) = parse(
        {"x": {"url": URL, "auth": "oauth", "oauth": {"client_metadata_url": OWN_DOCUMENT}}}
    ).specs
    assert own.client_metadata_url == OWN_DOCUMENT


@pytest.mark.parametrize(
    "oauth",
    [
        {"cimd": False},
        {"client_id": "pre-registered"},
        {"client_id": "pre-registered", "client_secret": "s"},
        {"client_name": "Claude Code"},
        {"token_endpoint_auth_method": "client_secret_post"},
        {"redirect_port": 5173},
        {"redirect_host": "::1"},
    ],
    ids=lambda oauth: ",".join(oauth),
)
def test_an_entry_that_asks_for_another_identity_registers_instead(oauth: dict[str, Any]) -> None:
    (spec,) = parse({"x": {"url": URL, "auth": "oauth", "oauth": oauth}}).specs
    assert spec.client_metadata_url is None and not spec.client_metadata_ports


def test_cimd_is_turned_off_only_by_false_as_hermes_compares_it() -> None:
    (spec,) = parse({"x": {"url": URL, "auth": "oauth", "oauth": {"cimd": "no"}}}).specs
    assert spec.client_metadata_url == HERMES_CIMD_URL


def test_an_unusable_document_url_is_noted_and_the_entry_registers() -> None:
    config = parse(
        {"x": {"url": URL, "auth": "oauth", "oauth": {"client_metadata_url": "http://x/cm"}}}
    )
    (spec,) = config.specs
    assert spec.client_metadata_url is None
    assert any("client_metadata_url" in n and "https" in n for n in config.notes["x"])


def test_the_token_endpoint_auth_method_is_taken_from_the_config() -> None:
    oauth = {
        "client_id": "c",
        "client_secret": "s",
        "token_endpoint_auth_method": "client_secret_basic",
    }
    (spec,) = parse({"x": {"url": URL, "auth": "oauth", "oauth": oauth}}).specs
    assert spec.token_endpoint_auth_method == "client_secret_basic"
    with pytest.raises(HermesConfigError, match="token_endpoint_auth_method"):
        parse(
            {
                "x": {
                    "url": URL,
                    "auth": "oauth",
                    "oauth": {"token_endpoint_auth_method": "private_key_jwt"},
                }
            }
        )


def test_a_proxy_redirect_uri_skips_the_server() -> None:
    config = parse({"x": {"url": URL, "auth": "oauth", "oauth": {"redirect_uri": "https://p/cb"}}})
    assert config.specs == []
    assert "redirect_uri" in dict(config.skipped)["x"]


def test_a_name_this_library_cannot_use_is_skipped() -> None:
    config = parse({"my server": {"url": URL, "auth": "oauth"}})
    assert config.specs == []
    assert "name" in dict(config.skipped)["my server"]


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ({"auth": "oauth"}, "no 'url'"),
        ({"auth": "oauth", "url": 5}, "url must be a string"),
        ({"auth": "oauth", "url": "ftp://x/"}, "http(s)"),
        ({"auth": "oauth", "url": URL, "oauth": {"redirect_port": 70000}}, "oauth.redirect_port"),
        ({"auth": "oauth", "url": URL, "oauth": {"redirect_port": "80a"}}, "oauth.redirect_port"),
        ({"auth": "oauth", "url": URL, "oauth": {"redirect_prot": 1}}, "unknown oauth key"),
        ({"auth": "oauth", "url": URL, "oauth": {"timeout": -1}}, "oauth.timeout"),
        ({"auth": "oauth", "url": URL, "oauth": {"scope": 3}}, "oauth.scope"),
        ({"auth": "oauth", "url": URL, "oauth": {"client_secret": "s"}}, "oauth.client_id"),
        ({"auth": "oauth", "url": URL, "oauth": ["x"]}, "oauth must be a mapping"),
        ({"auth": "oauth", "url": "${MCP_URL}"}, "environment variable 'MCP_URL'"),
        ({"auth": True, "url": URL}, "auth must be a string"),
        (
            {"auth": "oauth", "url": URL, "oauth": {"redirect_host": "example.com"}},
            "loopback",
        ),
    ],
)
def test_an_invalid_value_is_one_line_naming_file_server_and_key(
    entry: dict[str, Any], words: str
) -> None:
    with pytest.raises(HermesConfigError) as caught:
        parse({"srv": entry})
    message = str(caught.value)
    assert isinstance(caught.value, InvalidServerSpec)
    assert message.startswith("config.yaml: server 'srv'")
    assert words in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ([1, 2], "mapping at the top"),
        ({"mcp_servers": ["a"]}, "mcp_servers must be a mapping"),
        ({"mcp_servers": {False: {"url": URL}}}, "not a string"),
    ],
)
def test_a_malformed_document_is_one_line(data: object, words: str) -> None:
    with pytest.raises(HermesConfigError, match=words):
        parse_hermes_config(data, source="config.yaml")


def test_no_mcp_servers_is_no_servers() -> None:
    assert parse_hermes_config({"model": "x"}).specs == []
    assert parse_hermes_config(None).specs == []


def test_two_servers_in_one_hermes_token_file_are_refused() -> None:
    with pytest.raises(HermesConfigError, match=r"share hermes's token file a_b\.json"):
        parse({"a.b": {"url": URL, "auth": "oauth"}, "a_b": {"url": URL, "auth": "oauth"}})


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("linear", "linear"),
        ("my-server_2", "my-server_2"),
        ("github.com", "github_com"),
        ("a/b", "a_b"),
        ("../x", "x"),
        ("__x__", "x"),
        ("...", "default"),
        ("", "default"),
        ("é-ü", "é-ü"),  # \w is Unicode-aware, as in hermes
        ("x" * 200, "x" * 128),
        ("_" + "y" * 130, "y" * 128),
    ],
)
def test_hermes_safe_name(name: str, safe: str) -> None:
    assert hermes_safe_name(name) == safe
