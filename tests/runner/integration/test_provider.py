"""runner.provider and TokenStore.storage against real sandbox servers.

A host logs in once with ``authorize_many``, then talks to the server through the SDK's own
client with ``runner.provider(...)`` as its ``auth``. Expiry is simulated by rewriting the
stored record's ``expires_at`` (no waiting for a clock); the server's grant counters say
what really happened.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import ClientSession
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthMetadata, OAuthToken
from pydantic import AnyHttpUrl, AnyUrl

import runner
from portlease import Registry
from runner import ServerSpec, TokenStore, authorize_many
from runner._child._sdk import http as httpx2  # httpx on mcp 1.x
from runner._core._stored import StoredLogin
from runner._hosts._provider import RunnerProvider
from runner.errors import NeedsInteraction
from runner.sandbox import Sandbox
from runner.store import TokenStoreError

from support.logins import LONG_AGO, SandboxBrowser, no_pastes, refused_browser
from support.parents import released_together

pytestmark = pytest.mark.anyio


async def log_in(sandbox: Sandbox, tmp_path: Path) -> tuple[str, dict[str, str], TokenStore]:
    """One login through the runner; the server's name, hermes entry and the store."""
    store = TokenStore(tmp_path / "tokens")
    ((name, entry),) = sandbox.config().items()
    results = await authorize_many(
        sandbox.config(),
        store=store,
        registry=Registry(tmp_path / "leases"),
        browser=sandbox.browser,
        pastes=no_pastes(),
        timeout=60,
    )
    assert results[name].ok, results[name].error
    assert sandbox.grant_counts(name)["authorize"] == 1
    return name, entry, store


def rewrite(store: TokenStore, name: str, **changes: Any) -> StoredLogin:
    """Change fields of the stored login (``expires_at``, ``access_token``); returns it."""
    stored = store.load(name)
    assert stored is not None
    if "expires_at" in changes:
        stored.expires_at = changes.pop("expires_at")
    if changes:
        stored.tokens = stored.tokens.model_copy(update=changes)
    store.save(name, stored)
    return stored


async def tools_through(auth: httpx2.Auth, url: str) -> list[str]:
    """``list_tools`` with the SDK's own streamable-HTTP client, ``auth`` as its auth."""
    async with (
        httpx2.AsyncClient(auth=auth, timeout=30, trust_env=False) as http,
        streamable_http_client(url, http_client=http) as (read, write, *_),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        result = await session.list_tools()
    return [tool.name for tool in result.tools]


def counts(sandbox: Sandbox, name: str) -> dict[str, int]:
    return dict(sandbox.grant_counts(name))


# --- one process ------------------------------------------------------------------------------


async def test_an_expired_stored_token_is_refreshed_once_and_saved(tmp_path: Path) -> None:
    with Sandbox(servers=1) as sandbox:
        name, entry, store = await log_in(sandbox, tmp_path)
        old = rewrite(store, name, expires_at=LONG_AGO)

        auth = runner.provider((name, entry), store=store, browser=refused_browser)
        assert isinstance(auth, OAuthClientProvider) and isinstance(auth, httpx2.Auth)
        assert await tools_through(auth, entry["url"]) == ["whoami"]

        assert counts(sandbox, name) == {
            "authorize": 1,
            "authorization_code": 1,
            "refresh_token": 1,
        }
        saved = store.load(name)
        assert saved is not None
        assert saved.tokens.access_token != old.tokens.access_token
        assert saved.tokens.refresh_token != old.tokens.refresh_token  # rotated, and kept
        assert saved.tokens.access_token in sandbox.issued_tokens(name)
        assert saved.expires_at is not None and saved.expires_at > time.time() + 60
        assert saved.oauth_metadata is not None and saved.client_info is not None
        assert stat.S_IMODE(os.stat(store.path_for(name)).st_mode) == 0o600
        # The SDK's context holds what the store holds (issue #3250: expiry and metadata).
        assert auth.context.current_tokens == saved.tokens
        assert auth.context.token_expiry_time == saved.expires_at
        assert auth.context.oauth_metadata == saved.oauth_metadata


async def test_a_valid_stored_token_is_used_as_it_is(tmp_path: Path) -> None:
    with Sandbox(servers=1) as sandbox:
        name, entry, store = await log_in(sandbox, tmp_path)
        before = store.load(name)
        auth = runner.provider((name, entry), store=store, interactive=False)
        assert await tools_through(auth, entry["url"]) == ["whoami"]
        assert counts(sandbox, name)["refresh_token"] == 0
        after = store.load(name)
        assert before is not None and after is not None
        assert after.tokens == before.tokens


async def test_a_token_the_server_refuses_is_refreshed_and_the_request_resent(
    tmp_path: Path,
) -> None:
    with Sandbox(servers=1) as sandbox:
        name, entry, store = await log_in(sandbox, tmp_path)
        # Not expired by the clock, but unknown to the server: its first answer is a 401.
        rewrite(store, name, access_token="not-a-token-this-server-issued")
        auth = runner.provider((name, entry), store=store, browser=refused_browser)
        async with httpx2.AsyncClient(auth=auth, timeout=30, trust_env=False) as http:
            response = await http.post(
                entry["url"],
                json={
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "initialize",
                    "params": {
                        "protocolVersion": "2025-06-18",
                        "capabilities": {},
                        "clientInfo": {"name": "test", "version": "0"},
                    },
                },
                headers={"Accept": "application/json, text/event-stream"},
            )
        assert response.status_code == 200
        assert [r.status_code for r in response.history] == [401]
        assert counts(sandbox, name)["refresh_token"] == 1
        assert counts(sandbox, name)["authorize"] == 1
        saved = store.load(name)
        assert saved is not None and saved.tokens.access_token in sandbox.issued_tokens(name)


async def test_a_revoked_refresh_token_without_interaction_is_needs_interaction(
    tmp_path: Path,
) -> None:
    with Sandbox(servers=1) as sandbox:
        name, entry, store = await log_in(sandbox, tmp_path)
        before = rewrite(store, name, expires_at=LONG_AGO)
        sandbox.revoke_refresh_tokens(name)
        auth = runner.provider(
            (name, entry), store=store, interactive=False, browser=refused_browser
        )
        async with httpx2.AsyncClient(auth=auth, timeout=30, trust_env=False) as http:
            with pytest.raises(NeedsInteraction, match=name):
                await http.post(entry["url"], json={})
        assert counts(sandbox, name) == {
            "authorize": 1,
            "authorization_code": 1,
            "refresh_token": 0,
        }
        # Nothing is written before a new login succeeds (hermes-agent #98759).
        kept = store.load(name)
        assert kept is not None and kept.to_dict() == before.to_dict()


async def test_a_revoked_refresh_token_logs_in_again_through_the_runner(tmp_path: Path) -> None:
    with Sandbox(servers=1) as sandbox:
        name, entry, store = await log_in(sandbox, tmp_path)
        old = rewrite(store, name, expires_at=LONG_AGO)
        sandbox.revoke_refresh_tokens(name)
        browser = SandboxBrowser(sandbox)
        auth = runner.provider(
            (name, entry),
            store=store,
            registry=Registry(tmp_path / "leases"),
            browser=browser,
            timeout=60,
        )
        assert await tools_through(auth, entry["url"]) == ["whoami"]
        assert browser.count == 1
        assert counts(sandbox, name) == {
            "authorize": 2,
            "authorization_code": 2,
            "refresh_token": 0,
        }
        saved = store.load(name)
        assert saved is not None and saved.tokens.access_token != old.tokens.access_token
        assert saved.tokens.refresh_token  # a fresh login: refreshable again
        assert auth.context.current_tokens == saved.tokens
        assert Registry(tmp_path / "leases").list(stale=True) == []


async def test_nothing_stored_and_no_interaction_is_needs_interaction(tmp_path: Path) -> None:
    with Sandbox(servers=1) as sandbox:
        ((name, entry),) = sandbox.config().items()
        auth = runner.provider(
            (name, entry), store=TokenStore(tmp_path / "tokens"), interactive=False
        )
        async with httpx2.AsyncClient(auth=auth, timeout=30, trust_env=False) as http:
            with pytest.raises(NeedsInteraction, match=name):
                await http.post(entry["url"], json={})
        assert counts(sandbox, name) == {
            "authorize": 0,
            "authorization_code": 0,
            "refresh_token": 0,
        }


# --- four processes, one expired token ----------------------------------------------------------

# Each worker builds runner.provider over the shared store, says it is ready, waits at the
# barrier (EOF on a pipe that the test closes once all are ready), then lists the tools and
# prints a digest of the access token it ended with (never the token).
_WORKER = textwrap.dedent(
    """
    import hashlib, json, os, sys
    import anyio
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client
    import runner
    from runner import TokenStore
    from runner._child._sdk import http as httpx2  # httpx on mcp 1.x

    store_dir, name, url, barrier = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

    async def main() -> None:
        auth = runner.provider((name, {"url": url}), store=TokenStore(store_dir),
                               interactive=False, timeout=60)
        print("ready", flush=True)
        assert os.read(barrier, 1) == b""  # released together, when the test closes it
        async with (
            httpx2.AsyncClient(auth=auth, timeout=30, trust_env=False) as http,
            streamable_http_client(url, http_client=http) as (read, write, *_),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            tools = [t.name for t in (await session.list_tools()).tools]
        token = auth.context.current_tokens.access_token
        print(json.dumps({"tools": tools,
                          "token": hashlib.sha256(token.encode()).hexdigest()}), flush=True)

    anyio.run(main)
    """
)


@pytest.mark.timeout(120)
async def test_four_processes_with_one_expired_token_make_one_refresh(tmp_path: Path) -> None:
    with Sandbox(servers=1) as sandbox:
        name, entry, store = await log_in(sandbox, tmp_path)
        rewrite(store, name, expires_at=LONG_AGO)
        outputs, codes = await anyio.to_thread.run_sync(
            run_workers, store, name, entry["url"], lambda: counts(sandbox, name)
        )
        failed = [err[-2000:] for (_, err), code in zip(outputs, codes, strict=True) if code]
        assert not failed, failed
        reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
        assert [r["tools"] for r in reports] == [["whoami"]] * 4
        # One refresh grant: the others waited at the lock, re-read the store and adopted
        # the rotated tokens instead of replaying the spent refresh token.
        assert counts(sandbox, name) == {
            "authorize": 1,
            "authorization_code": 1,
            "refresh_token": 1,
        }
        saved = store.load(name)
        assert saved is not None
        digest = hashlib.sha256(saved.tokens.access_token.encode()).hexdigest()
        assert [r["token"] for r in reports] == [digest] * 4


def run_workers(
    store: TokenStore, name: str, url: str, server_counts: Callable[[], dict[str, int]]
) -> tuple[list[tuple[str, str]], list[int]]:
    """Start four workers, release them together once all are ready; their output and exit
    codes. Blocking: run it in a thread."""

    def nobody_went_yet() -> None:
        assert server_counts()["refresh_token"] == 0  # nobody went before the barrier

    done = released_together(
        _WORKER, [str(store.directory), name, url], 4, before_release=nobody_went_yet
    )
    return [(each.stdout, each.stderr) for each in done], [each.returncode for each in done]


# --- TokenStore.storage -------------------------------------------------------------------------

URL = "https://mcp.example.test/mcp"


def _client() -> OAuthClientInformationFull:
    return OAuthClientInformationFull(
        client_id="client-1",
        redirect_uris=[AnyUrl("http://127.0.0.1:5173/callback")],
        token_endpoint_auth_method="none",
    )


def _tokens(access: str, refresh: str | None = "r-1") -> OAuthToken:
    return OAuthToken(access_token=access, expires_in=3600, refresh_token=refresh, scope="mcp")


async def test_storage_round_trip(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens")
    storage = store.storage("srv", server_url=URL)
    assert await storage.get_tokens() is None
    assert await storage.get_client_info() is None

    await storage.set_client_info(_client())  # a registration comes before any tokens
    assert not store.path_for("srv").exists()
    assert await storage.get_client_info() == _client()

    before = time.time()
    await storage.set_tokens(_tokens("a-1"))
    assert stat.S_IMODE(os.stat(store.path_for("srv")).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(store.directory).st_mode) == 0o700
    saved = store.load("srv")
    assert saved is not None
    assert saved.server_url == URL
    assert saved.tokens == _tokens("a-1")
    assert saved.client_info == _client()
    assert saved.expires_at is not None and before + 3600 <= saved.expires_at <= time.time() + 3600

    # Another storage over the same file (a restart) reads it back.
    again = store.storage("srv")
    assert await again.get_tokens() == _tokens("a-1")
    assert await again.get_client_info() == _client()


async def test_storage_writes_are_atomic_and_keep_the_rest_of_the_record(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens")
    metadata = OAuthMetadata(
        issuer=AnyHttpUrl("https://mcp.example.test"),
        authorization_endpoint=AnyHttpUrl("https://mcp.example.test/authorize"),
        token_endpoint=AnyHttpUrl("https://mcp.example.test/token"),
    )
    store.save(
        "srv",
        StoredLogin(
            server_url=URL,
            tokens=_tokens("a-1"),
            expires_at=LONG_AGO,
            client_info=_client(),
            oauth_metadata=metadata,
        ),
    )
    path = store.path_for("srv")
    with open(path, "rb") as old:  # a reader that opened the file before the write
        storage = store.storage("srv")  # no server_url: the record's is kept
        await storage.set_tokens(_tokens("a-2", refresh="r-2"))
        assert json.loads(old.read())["tokens"]["access_token"] == "a-1"  # a whole old file
    saved = store.load("srv")
    assert saved is not None
    assert saved.tokens == _tokens("a-2", refresh="r-2")
    assert saved.server_url == URL
    assert saved.oauth_metadata == metadata and saved.client_info == _client()
    assert saved.expires_at is not None and saved.expires_at > time.time()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert sorted(p.name for p in store.directory.iterdir()) == ["srv.json"]  # no temp file


async def test_storage_needs_a_server_url_for_a_first_record(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens")
    with pytest.raises(TokenStoreError, match="server_url"):
        await store.storage("srv").set_tokens(_tokens("a-1"))
    assert store.load("srv") is None


async def test_provider_is_the_public_function_even_after_its_module_loaded(
    tmp_path: Path,
) -> None:
    import runner._hosts._provider

    assert "provider" in runner.__all__
    assert runner.provider is runner._hosts._provider.provider  # not shadowed by a submodule
    auth = runner.provider({"srv": {"url": URL}}, store=TokenStore(tmp_path / "none"))
    assert isinstance(auth, RunnerProvider) and auth.spec == ServerSpec(name="srv", url=URL)
    assert not (tmp_path / "none").exists()  # nothing is read or written before a request


# --- one policy: what status says is what the provider does ------------------------------------


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    expires_in=st.none() | st.integers(min_value=1, max_value=7200),
    left=st.none() | st.floats(min_value=-3600, max_value=7200),
    refresh=st.booleans(),
    client=st.booleans(),
    metadata=st.booleans(),
)
def test_status_and_the_provider_agree_on_every_login(
    tmp_path: Path,
    expires_in: int | None,
    left: float | None,
    refresh: bool,
    client: bool,
    metadata: bool,
) -> None:
    from runner._cli._status import login_state_words as _login_state

    now = time.time()  # one clock reading for both: a login on the boundary must not flip
    tokens: dict[str, Any] = {"access_token": "at", "token_type": "Bearer"}
    if expires_in is not None:
        tokens["expires_in"] = expires_in
    if refresh:
        tokens["refresh_token"] = "rt"
    login = StoredLogin.from_dict(
        {
            "version": 1,
            "server_url": URL,
            "tokens": tokens,
            "expires_at": None if left is None else now + left,
            "client_info": {"client_id": "c", "redirect_uris": [str(_client().redirect_uris[0])]}
            if client
            else None,
            "oauth_metadata": {
                "issuer": "https://as.example.test",
                "authorization_endpoint": "https://as.example.test/authorize",
                "token_endpoint": "https://as.example.test/token",
            }
            if metadata
            else None,
        }
    )
    spec = ServerSpec(name="srv", url=URL)
    provider = runner.provider(spec, store=TokenStore(tmp_path / "never-written"))
    status = _login_state(spec, login, now)
    assert provider._usable(login, now) is (status == "logged in"), status
