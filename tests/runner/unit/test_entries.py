"""One reading of a hermes-style entry, for authorize_many and for hermes's config.yaml."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner._core._entries import parse_servers, read_entry
from runner.errors import HermesConfigError, InvalidServerSpec

URL = "https://mcp.example.com/mcp"


def test_a_real_hermes_entry_is_a_login_for_both() -> None:
    entry = {
        "url": URL,
        "auth": "oauth",
        "sampling": {"enabled": False},
        "tools": {"include": ["a"]},
        "timeout": 120,
        "oauth": {"scope": "read", "redirect_port": "8765"},
    }
    (spec,) = parse_servers({"linear": entry})
    hermes = read_entry("linear", entry, hermes_config=True, source="config.yaml")
    assert hermes.spec is not None
    assert (spec.scope, spec.redirect_port) == (hermes.spec.scope, hermes.spec.redirect_port)


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ({"url": URL, "auth": "header"}, "is not oauth"),
        ({"url": URL, "auth": "oauth", "enabled": "no"}, "disabled"),
        ({"command": "npx"}, "stdio server"),
        ("not a mapping", "mapping"),
    ],
)
def test_what_hermes_skips_the_library_refuses_for_the_same_reason(entry: Any, reason: str) -> None:
    read = read_entry("srv", entry, hermes_config=True, source="config.yaml")
    assert read.spec is None and read.skipped is not None
    with pytest.raises(InvalidServerSpec, match=reason):
        parse_servers({"srv": entry})


def test_the_library_takes_an_entry_without_auth_as_a_login_hermes_does_not() -> None:
    assert parse_servers({"srv": {"url": URL}})[0].url == URL
    read = read_entry("srv", {"url": URL}, hermes_config=True, source="config.yaml")
    assert read.skipped == "HTTP server without auth: oauth"


def test_an_unknown_key_is_an_error_for_the_library_and_a_note_for_hermes() -> None:
    entry = {"url": URL, "auth": "oauth", "brand_new_hermes_key": 1}
    with pytest.raises(InvalidServerSpec, match="brand_new_hermes_key"):
        parse_servers({"srv": entry})
    read = read_entry("srv", entry, hermes_config=True, source="config.yaml")
    assert read.spec is not None and any("brand_new_hermes_key" in n for n in read.notes)


def test_errors_name_the_file_only_for_a_config() -> None:
    bad = {"url": URL, "oauth": {"redirect_port": "x"}}
    with pytest.raises(HermesConfigError, match=r"^config.yaml: server 'srv': oauth.redirect_port"):
        read_entry("srv", {**bad, "auth": "oauth"}, hermes_config=True, source="config.yaml")
    with pytest.raises(InvalidServerSpec, match=r"^server 'srv': oauth.redirect_port") as caught:
        parse_servers({"srv": bad})
    assert not isinstance(caught.value, HermesConfigError)


_values = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 70000), st.text(max_size=12), st.sampled_from(
        ["oauth", " OAuth ", "header", "8080", "read write", "127.0.0.1", "::1", "/callback"])
)  # fmt: skip
_oauth = st.dictionaries(
    st.sampled_from(
        ["scope", "client_id", "client_secret", "redirect_port", "redirect_host", "timeout",
         "client_name", "cimd", "user_agent", "flow", "token_endpoint_auth_method"]
    ),
    _values,
    max_size=4,
)  # fmt: skip
_entries = st.fixed_dictionaries(
    {"url": st.sampled_from([URL, "http://127.0.0.1:9/mcp", "ftp://x", "", 5])},
    optional={
        "auth": _values,
        "enabled": _values,
        "oauth": _oauth | _values,
        "headers": st.just({"X": "1"}),
        "sampling": st.just({}),
    },
)


@settings(max_examples=400, deadline=None)
@given(_entries)
def test_the_two_readings_agree_where_both_log_in(entry: dict[str, Any]) -> None:
    """Where hermes's config logs in, the library logs in to the same server with the same
    options (but hermes's own client metadata document); where the entry names an ``auth``
    that hermes refuses, the library refuses it too. Each raises only its own error."""
    try:
        hermes = read_entry("srv", entry, hermes_config=True, source="config.yaml")
    except HermesConfigError:
        hermes = None
    try:
        library = read_entry("srv", entry, hermes_config=False)
    except HermesConfigError:  # pragma: no cover - the library never names a file
        raise
    except InvalidServerSpec:
        library = None
    if hermes is not None and hermes.spec is not None:
        assert library is not None and library.spec is not None
        without_document = dataclasses.replace(
            hermes.spec, client_metadata_url=None, client_metadata_ports=frozenset()
        )
        assert without_document == library.spec
    auth = entry.get("auth")
    says_another_auth = isinstance(auth, str) and auth.strip() != ""
    if hermes is not None and hermes.skipped is not None and says_another_auth:
        assert library is None
