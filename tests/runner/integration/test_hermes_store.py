"""``HermesTokenStore``: hermes's files, read and written as hermes does, and its refresh lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mcp.shared.auth import OAuthClientInformationFull, OAuthMetadata, OAuthToken
from pydantic import AnyUrl

from runner._core._stored import StoredLogin
from runner.hermes_store import HermesTokenStore, registered_port
from runner.store import LoginLockTimeout, TokenStoreWarning

URL = "http://127.0.0.1:9/mcp"

# hermes's acquire_refresh_fence: open O_RDWR|O_CREAT 0600, poll flock(LOCK_EX|LOCK_NB).
HERMES_FENCE = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
deadline = time.monotonic() + float(sys.argv[2])
while True:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        break
    except BlockingIOError:
        if time.monotonic() >= deadline:
            print("timeout", flush=True)
            sys.exit(3)
        time.sleep(0.05)
print("locked", flush=True)
sys.stdin.readline()
"""


def login(expires_at: float | None = None) -> StoredLogin:
    return StoredLogin(
        server_url=URL,
        tokens=OAuthToken(
            access_token="a1", token_type="Bearer", expires_in=3600, refresh_token="r1", scope="mcp"
        ),
        expires_at=expires_at if expires_at is not None else time.time() + 3600,
        client_info=OAuthClientInformationFull(
            client_id="c1",
            redirect_uris=[AnyUrl("http://127.0.0.1:27891/callback")],
            token_endpoint_auth_method="none",
        ),
        oauth_metadata=OAuthMetadata(
            issuer=AnyUrl("http://127.0.0.1:9/"),
            authorization_endpoint=AnyUrl("http://127.0.0.1:9/authorize"),
            token_endpoint=AnyUrl("http://127.0.0.1:9/token"),
        ),
    )


def test_save_writes_hermes_files_and_load_reads_them_back(tmp_path: Path) -> None:
    store = HermesTokenStore(tmp_path, server_urls={"github.com": URL})
    saved = login()
    path = store.save("github.com", saved)
    directory = tmp_path / "mcp-tokens"
    assert path == directory / "github_com.json"
    assert directory.stat().st_mode & 0o777 == 0o700
    names = sorted(p.name for p in directory.iterdir())
    assert names == ["github_com.client.json", "github_com.json", "github_com.meta.json"]
    for name in names:
        assert (directory / name).stat().st_mode & 0o777 == 0o600
    raw = json.loads(path.read_text())
    assert set(raw) == {
        "access_token", "token_type", "expires_in", "refresh_token", "scope",
        "expires_at", "hermes_issuer",
    }  # fmt: skip
    assert raw["hermes_issuer"] == "http://127.0.0.1:9"  # as hermes writes it: no "/"
    loaded = store.load("github.com")
    assert loaded is not None
    assert loaded.server_url == URL
    assert loaded.tokens == saved.tokens
    assert loaded.expires_at == pytest.approx(saved.expires_at)
    assert loaded.client_info == saved.client_info
    assert loaded.oauth_metadata == saved.oauth_metadata
    assert registered_port(loaded) == 27891
    assert store.stored_stems() == ["github_com"]
    assert HermesTokenStore(tmp_path).load("github.com", server_url="http://x/mcp") is not None


def test_an_old_file_without_expires_at_expires_by_its_mtime(tmp_path: Path) -> None:
    directory = tmp_path / "mcp-tokens"
    directory.mkdir(mode=0o700)
    path = directory / "x.json"
    path.write_text(json.dumps({"access_token": "a", "token_type": "Bearer", "expires_in": 100}))
    os.utime(path, (1_000_000, 1_000_000))
    loaded = HermesTokenStore(tmp_path).load("x", server_url=URL)
    assert loaded is not None and loaded.expires_at == 1_000_100
    assert loaded.client_info is None


@pytest.mark.parametrize("content", [b"{not json", b"[1]", b'{"token_type": 5}', b"x" * (2 << 20)])
def test_an_unreadable_file_is_reported_and_left_in_place(tmp_path: Path, content: bytes) -> None:
    directory = tmp_path / "mcp-tokens"
    directory.mkdir(mode=0o700)
    path = directory / "x.json"
    path.write_bytes(content)
    with pytest.warns(TokenStoreWarning, match="left in place"):
        assert HermesTokenStore(tmp_path).load("x", server_url=URL) is None
    assert path.read_bytes() == content
    assert sorted(p.name for p in directory.iterdir()) == ["x.json"]


def test_an_unreadable_registration_keeps_the_tokens(tmp_path: Path) -> None:
    store = HermesTokenStore(tmp_path)
    store.save("x", login())
    client = tmp_path / "mcp-tokens" / "x.client.json"
    client.write_text("{broken")
    with pytest.warns(TokenStoreWarning):
        loaded = store.load("x", server_url=URL)
    assert loaded is not None and loaded.client_info is None and loaded.oauth_metadata is not None
    assert client.read_text() == "{broken"


def test_delete_removes_what_hermes_removes_and_keeps_the_lock(tmp_path: Path) -> None:
    store = HermesTokenStore(tmp_path)
    store.save("x", login())
    (tmp_path / "mcp-tokens" / "x.cimd-off").touch()
    assert store.cimd_refused("x")
    with store.hold("x", 1):
        pass
    assert store.delete("x") is True
    assert [p.name for p in (tmp_path / "mcp-tokens").iterdir()] == ["x.json.refresh.lock"]
    assert store.delete("x") is False
    assert store.load("x") is None


def test_hold_and_hermes_refresh_fence_exclude_each_other(tmp_path: Path) -> None:
    store = HermesTokenStore(tmp_path)
    lock = store.lock_path_for("notes.app")
    assert lock.name == "notes_app.json.refresh.lock"
    with store.hold("notes.app", 5):
        hermes = subprocess.run(
            [sys.executable, "-c", HERMES_FENCE, str(lock), "0.3"],
            capture_output=True, text=True, timeout=60, input="",
        )  # fmt: skip
        assert hermes.returncode == 3 and hermes.stdout.strip() == "timeout"
    assert lock.stat().st_mode & 0o777 == 0o600
    proc = subprocess.Popen(
        [sys.executable, "-c", HERMES_FENCE, str(lock), "30"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        started = time.monotonic()
        with pytest.raises(LoginLockTimeout, match="refresh lock"), store.hold("notes.app", 0.3):
            pass
        assert time.monotonic() - started >= 0.3
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0
        assert proc.stdout is not None
        proc.stdout.close()
    with store.hold("notes.app", 5):  # hermes let go
        pass
