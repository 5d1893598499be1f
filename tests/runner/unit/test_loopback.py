"""runner._core._loopback: the one table of loopback host spellings. Pure: no sockets."""

from __future__ import annotations

import urllib.parse

import pytest

from runner._core._loopback import (
    DEFAULT_LOOPBACK_HOST,
    LOOPBACK_HOSTS,
    LOOPBACK_NETLOC_HOSTS,
    canonical_host,
    netloc_host,
)


def test_the_table() -> None:
    assert LOOPBACK_HOSTS == ("127.0.0.1", "::1", "localhost")
    assert DEFAULT_LOOPBACK_HOST in LOOPBACK_HOSTS
    assert LOOPBACK_NETLOC_HOSTS == ("127.0.0.1", "[::1]", "localhost")
    assert isinstance(LOOPBACK_HOSTS, tuple)  # immutable: no module state


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("::1", "::1"),
        ("[::1]", "::1"),
        ("localhost", "localhost"),
        ("LocalHost", "localhost"),
        ("[::1", "[::1"),  # half a bracket pair is not an IPv6 literal
        ("[127.0.0.1]", "[127.0.0.1]"),  # only an IPv6 literal is bracketed in a URL
        ("Example.COM", "example.com"),  # any host is read; membership is the table's
    ],
)
def test_canonical_host(written: str, canonical: str) -> None:
    assert canonical_host(written) == canonical
    assert canonical_host(canonical_host(written)) == canonical_host(written)


@pytest.mark.parametrize(
    ("host", "netloc"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("::1", "[::1]"),
        ("[::1]", "[::1]"),
        ("LOCALHOST", "localhost"),
    ],
)
def test_netloc_host(host: str, netloc: str) -> None:
    assert netloc_host(host) == netloc


@pytest.mark.parametrize("host", LOOPBACK_HOSTS)
def test_netloc_and_canonical_round_trip_through_a_url(host: str) -> None:
    url = f"http://{netloc_host(host)}:5555/callback"
    assert urllib.parse.urlsplit(url).hostname == host
    assert canonical_host(netloc_host(host)) == host
