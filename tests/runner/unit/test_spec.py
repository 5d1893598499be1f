"""Validating what to log in to."""

from __future__ import annotations

from typing import Any

import pytest

from runner._core._entries import parse_servers
from runner._core._spec import ServerSpec
from runner.errors import InvalidServerSpec


def test_hermes_style_mapping() -> None:
    specs = parse_servers(
        {
            "linear": {"url": "https://mcp.linear.app/mcp"},
            "notion": {
                "url": "http://127.0.0.1:9/mcp",
                "headers": {},
                "oauth": {"redirect_port": 5173, "scope": "read", "timeout": 30},
            },
        }
    )
    assert [s.name for s in specs] == ["linear", "notion"]
    assert specs[1].redirect_port == 5173 and specs[1].scope == "read" and specs[1].timeout == 30
    assert specs[0].redirect_host == "127.0.0.1" and specs[0].callback_path == "/callback"


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ({"url": "http://x/mcp", "oatuh": {}}, "'oatuh'"),
        ({"url": "http://x/mcp", "oauth": {"redirect_prot": 1}}, "'redirect_prot'"),
        ({"command": "npx"}, "'command'"),
        ({"headers": {}}, "no 'url'"),
        ({"url": "ftp://x"}, "not an http"),
        ({"url": "http://x", "oauth": {"redirect_port": 70000}}, "redirect_port"),
        ({"url": "http://x", "oauth": {"redirect_port": True}}, "redirect_port"),
        ({"url": "http://x", "oauth": {"redirect_host": "0.0.0.0"}}, "not loopback"),
        ({"url": "http://x", "oauth": {"redirect_host": "mcp.example.invalid"}}, "not loopback"),
        ({"url": "http://x", "oauth": {"callback_path": "cb"}}, "callback_path"),
        ({"url": "http://x", "oauth": {"timeout": 0}}, "timeout"),
        ({"url": "http://x", "oauth": {"client_secret": "s"}}, "client_id"),
        ({"url": "http://x", "oauth": "yes"}, "mapping"),
        ({"url": 5}, "url"),
    ],
)
def test_bad_entries_name_the_problem(entry: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidServerSpec, match=words) as info:
        parse_servers({"srv": entry})
    assert "'srv'" in str(info.value)


@pytest.mark.parametrize("name", ["", "../etc", "a b", "-x", "x" * 65, "é"])
def test_names_are_safe_file_names(name: str) -> None:
    with pytest.raises(InvalidServerSpec, match="name"):
        ServerSpec(name=name, url="http://127.0.0.1/mcp")


def test_duplicates_are_refused() -> None:
    spec = ServerSpec(name="a", url="http://127.0.0.1/mcp")
    with pytest.raises(InvalidServerSpec, match="twice"):
        parse_servers([spec, spec])


def test_a_list_must_hold_specs() -> None:
    with pytest.raises(InvalidServerSpec, match="ServerSpec"):
        parse_servers([{"name": "a"}])  # type: ignore[list-item]


def test_secret_is_not_in_repr() -> None:
    spec = ServerSpec(name="a", url="http://x/mcp", client_id="id", client_secret="hunter2")
    assert "hunter2" not in repr(spec)


def test_invalid_spec_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not an http"):
        ServerSpec(name="a", url="mailto:x")
