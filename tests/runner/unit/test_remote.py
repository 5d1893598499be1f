"""``runner._core._remote``: the ``ssh -L`` line for a login reached over SSH with no display.
Pure: environment mappings and URLs in, lines out."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runner._core._remote import (
    UNSURE_HOST,
    redirect_address,
    remote_without_display,
    tunnel_hint,
)

SSH = {"SSH_CONNECTION": "198.51.100.7 50022 203.0.113.5 22"}


def auth_url(redirect: str) -> str:
    query = urlencode({"response_type": "code", "redirect_uri": redirect, "state": "s"})
    return f"https://as.example/authorize?{query}"


@pytest.mark.parametrize(
    ("env", "remote"),
    [
        (SSH, True),
        ({"SSH_CLIENT": "198.51.100.7 50022 22"}, True),
        ({**SSH, "DISPLAY": ":0"}, False),  # X11 forwarding: a browser can open
        ({**SSH, "WAYLAND_DISPLAY": "wayland-0"}, False),
        ({**SSH, "DISPLAY": ""}, True),
        ({}, False),
        ({"SSH_CONNECTION": ""}, False),
    ],
)
def test_remote_without_display(env: dict[str, str], remote: bool) -> None:
    assert remote_without_display(env) is remote


def test_the_line_names_the_leased_port_the_user_and_the_server_address() -> None:
    lines = tunnel_hint(SSH, auth_url("http://127.0.0.1:41234/callback"), "alice")
    assert lines is not None
    assert lines[1].strip() == "ssh -L 41234:127.0.0.1:41234 alice@203.0.113.5"
    assert "paste" in " ".join(lines)


def test_ipv6_listener_non_standard_ssh_port_and_odd_user_name() -> None:
    env = {"SSH_CONNECTION": "2001:db8::7 50022 2001:db8::5 2222"}
    lines = tunnel_hint(env, auth_url("http://[::1]:5173/callback"), "o'brien x")
    assert lines is not None
    assert lines[1].strip() == "ssh -L 5173:[::1]:5173 -p 2222 'o'\"'\"'brien x'@2001:db8::5"


@pytest.mark.parametrize(
    "env",
    [
        {"SSH_CLIENT": "198.51.100.7 50022 22"},  # no server address at all
        {"SSH_CONNECTION": "127.0.0.1 50022 127.0.0.1 22"},  # came through a tunnel
        {"SSH_CONNECTION": "garbage"},
        {"SSH_CONNECTION": "1.2.3.4 1 not-an-ip 22"},
    ],
)
def test_an_unknown_address_is_said_as_such(env: dict[str, str]) -> None:
    lines = tunnel_hint(env, auth_url("http://localhost:8000/cb"), "bob")
    assert lines is not None
    assert lines[1].strip() == f"ssh -L 8000:127.0.0.1:8000 bob@{UNSURE_HOST}"
    assert any("the one you reached this machine at" in line for line in lines)


def test_no_user_name_known_says_user() -> None:
    lines = tunnel_hint(SSH, auth_url("http://127.0.0.1:9/c"), "")
    assert lines is not None and lines[1].strip().endswith("$USER@203.0.113.5")


@pytest.mark.parametrize(
    "url",
    [
        auth_url("https://127.0.0.1:9/c"),
        auth_url("http://evil.example:9/c"),
        auth_url("http://127.0.0.1/c"),
        auth_url("http://127.0.0.1:99999/c"),
        "https://as.example/authorize?state=s",
        "not a url at all",
        "x" * 20000,
    ],
)
def test_no_line_without_a_loopback_redirect_with_a_port(url: str) -> None:
    assert tunnel_hint(SSH, url, "alice") is None


def test_no_line_when_local_or_with_a_display() -> None:
    url = auth_url("http://127.0.0.1:41234/callback")
    assert tunnel_hint({}, url, "alice") is None
    assert tunnel_hint({**SSH, "DISPLAY": "localhost:10.0"}, url, "alice") is None


def test_redirect_address_reads_the_redirect_uri() -> None:
    assert redirect_address(auth_url("http://[::1]:5173/callback")) == ("::1", 5173)
    assert redirect_address(auth_url("http://LOCALHOST:80/x")) == ("localhost", 80)


@given(st.text(max_size=300), st.text(max_size=80), st.text(max_size=20))
def test_never_raises(url: str, connection: str, user: str) -> None:
    lines = tunnel_hint({"SSH_CONNECTION": connection}, url, user)
    assert lines is None or lines[1].strip().startswith("ssh -L ")
