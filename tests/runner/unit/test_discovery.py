"""runner._core._discovery: where a server's metadata is looked up, and which documents fit."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from runner._core._discovery import (
    authorization_server_urls,
    default_metadata,
    protected_resource_urls,
    read_resource_metadata,
    read_server_metadata,
)

SERVER = "http://127.0.0.1:8123/mcp"


def test_resource_metadata_urls_in_the_specs_order() -> None:
    assert protected_resource_urls(SERVER, "http://127.0.0.1:8123/custom.json") == [
        "http://127.0.0.1:8123/custom.json",
        "http://127.0.0.1:8123/.well-known/oauth-protected-resource/mcp",
        "http://127.0.0.1:8123/.well-known/oauth-protected-resource",
    ]
    assert protected_resource_urls("http://127.0.0.1:8123/") == [
        "http://127.0.0.1:8123/.well-known/oauth-protected-resource"
    ]


def test_server_metadata_urls_with_and_without_a_path() -> None:
    assert authorization_server_urls("http://127.0.0.1:9") == [
        "http://127.0.0.1:9/.well-known/oauth-authorization-server",
        "http://127.0.0.1:9/.well-known/openid-configuration",
    ]
    assert authorization_server_urls("http://127.0.0.1:9/tenant1") == [
        "http://127.0.0.1:9/.well-known/oauth-authorization-server/tenant1",
        "http://127.0.0.1:9/.well-known/openid-configuration/tenant1",
        "http://127.0.0.1:9/tenant1/.well-known/openid-configuration",
    ]


def test_a_2025_03_26_server_has_default_endpoints_at_its_origin() -> None:
    metadata = default_metadata(SERVER)
    assert str(metadata.token_endpoint) == "http://127.0.0.1:8123/token"
    assert str(metadata.issuer).rstrip("/") == "http://127.0.0.1:8123"


def test_resource_metadata_for_another_resource_does_not_fit() -> None:
    mine = {"resource": SERVER, "authorization_servers": ["http://127.0.0.1:9"]}
    assert read_resource_metadata(SERVER, json.dumps(mine).encode()) is not None
    evil = {**mine, "resource": "https://evil.example.com/mcp"}
    assert read_resource_metadata(SERVER, json.dumps(evil).encode()) is None


def test_server_metadata_of_another_issuer_does_not_fit() -> None:
    document = {
        "issuer": "http://127.0.0.1:9",
        "authorization_endpoint": "http://127.0.0.1:9/authorize",
        "token_endpoint": "http://127.0.0.1:9/token",
    }
    assert read_server_metadata("http://127.0.0.1:9", json.dumps(document).encode()) is not None
    assert read_server_metadata("http://127.0.0.1:7", json.dumps(document).encode()) is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_the_readers_never_raise(body: bytes) -> None:
    read_resource_metadata(SERVER, body)
    read_server_metadata("http://127.0.0.1:9", body)
