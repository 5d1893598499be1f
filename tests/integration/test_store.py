"""TokenStore: 0600 files, atomic replace, and unreadable files kept aside."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from pydantic import AnyUrl

from runner.store import StoredLogin, TokenStore, TokenStoreWarning


def a_login(token: str = "tok") -> StoredLogin:
    return StoredLogin(
        server_url="http://127.0.0.1:1/mcp",
        tokens=OAuthToken(access_token=token, refresh_token="ref", expires_in=60),
        expires_at=1234.5,
        client_info=OAuthClientInformationFull(
            client_id="cid", redirect_uris=[AnyUrl("http://127.0.0.1:5/callback")]
        ),
        oauth_metadata=None,
    )


def test_save_and_load(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens")
    path = store.save("linear", a_login())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    loaded = store.load("linear")
    assert loaded is not None
    assert loaded.tokens.access_token == "tok" and loaded.expires_at == 1234.5
    assert loaded.client_info is not None and loaded.client_info.client_id == "cid"
    assert "tok" not in repr(loaded)


def test_missing_is_none(tmp_path: Path) -> None:
    assert TokenStore(tmp_path).load("nobody") is None


def test_replace_leaves_no_temporary_files(tmp_path: Path) -> None:
    store = TokenStore(tmp_path)
    for i in range(5):
        store.save("a", a_login(f"t{i}"))
    assert sorted(os.listdir(tmp_path)) == ["a.json"]
    loaded = store.load("a")
    assert loaded is not None and loaded.tokens.access_token == "t4"


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{not json",
        b"[]",
        b'{"version": 1}',
        b'{"version": 1, "server_url": "u", "tokens": {"access_token": 5}}',
        b'{"version": 1, "server_url": "u", "tokens": {"access_token": "a"}, "expires_at": "x"}',
        b"\xff\xfe",
    ],
)
def test_unreadable_file_is_kept_aside(tmp_path: Path, content: bytes) -> None:
    store = TokenStore(tmp_path)
    store.path_for("srv").write_bytes(content)
    with pytest.warns(TokenStoreWarning, match="kept as"):
        assert store.load("srv") is None
    assert not store.path_for("srv").exists()
    (aside,) = tmp_path.glob("srv.json.corrupt-*")
    assert aside.read_bytes() == content
    store.save("srv", a_login())  # and the store goes on working
    assert store.load("srv") is not None


def test_delete(tmp_path: Path) -> None:
    store = TokenStore(tmp_path)
    store.save("a", a_login())
    assert store.delete("a") and not store.delete("a")
