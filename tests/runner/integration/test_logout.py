"""Logout revokes (RFC 7009): log in to a sandbox server, log out through ``runner.logout`` or
the command line, then the server refuses the old refresh token (``invalid_grant``) and the
old access token (401). A revocation endpoint that is down, answers 503, is missing or
belongs to another issuer: the files are removed all the same, and what may still be alive
is said. Real sandbox servers on 127.0.0.1, real files, real subprocesses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import runner
from portlease import Registry
from runner import ServerSpec, TokenStore, authorize_many
from runner._core._stored import StoredLogin
from runner._parent._refresher import refresh_login
from runner.errors import RefreshRefused, RevocationWarning
from runner.hermes_store import HermesTokenStore
from runner.sandbox import Sandbox, TokenRejected, whoami_with_token

from support.hermes import hermes_login
from support.logins import login, no_pastes

pytestmark = pytest.mark.anyio


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


async def logged_in(sandbox: Sandbox, tmp_path: Path) -> tuple[TokenStore, str, StoredLogin]:
    """One login through the runner (dynamic registration); the store, name and record."""
    results = await login(sandbox, tmp_path)
    ((name, result),) = results.items()
    assert result.ok, result.error
    store = TokenStore(tmp_path / "tokens")
    stored = store.load(name)
    assert stored is not None and stored.tokens.refresh_token
    return store, name, stored


async def assert_dead(sandbox: Sandbox, name: str, stored: StoredLogin) -> None:
    """The server refuses the login's refresh token (invalid_grant) and its access token."""
    with pytest.raises(RefreshRefused) as refused:
        await refresh_login(stored, timeout=30)
    assert refused.value.code == "invalid_grant"
    with pytest.raises(TokenRejected):
        await whoami_with_token(sandbox.server(name).url, stored.tokens.access_token)


async def assert_alive(sandbox: Sandbox, name: str, stored: StoredLogin) -> None:
    """The server still takes the login's access token and refresh token."""
    assert await whoami_with_token(sandbox.server(name).url, stored.tokens.access_token) == name
    assert (await refresh_login(stored, timeout=30)).tokens.access_token


def files_of(store: TokenStore) -> list[str]:
    return sorted(p.name for p in store.directory.iterdir())


# --- revoked -----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["none", "client_secret_post", "client_secret_basic"])
async def test_logout_revokes_with_the_clients_own_authentication(
    tmp_path: Path, method: str
) -> None:
    secret = "" if method == "none" else "its-secret"
    with Sandbox(
        servers=1,
        preregistered=("pre-registered", secret, method),
        registration=False,
        auth_methods=(method,),
    ) as sandbox:
        server = sandbox.servers[0]
        spec = ServerSpec(
            name=server.name,
            url=server.url,
            client_id="pre-registered",
            client_secret=secret or None,
            token_endpoint_auth_method=method,
        )
        store = TokenStore(tmp_path / "tokens")
        results = await authorize_many(
            [spec],
            store=store,
            registry=Registry(tmp_path / "leases"),
            browser=sandbox.browser,
            pastes=no_pastes(),
            timeout=60,
        )
        assert results[server.name].ok, results[server.name].error
        stored = store.load(server.name)
        assert stored is not None and stored.client_info is not None
        assert stored.client_info.token_endpoint_auth_method == method

        result = await runner.logout(spec, store=store, timeout=30)

        assert result.had_login and result.removed
        assert result.revoked == ("refresh_token", "access_token"), result.tokens
        assert result.warning() is None
        assert store.load(server.name) is None
        await assert_dead(sandbox, server.name, stored)


async def test_logout_sync_and_the_command_line_revoke(tmp_path: Path) -> None:
    with Sandbox(servers=2) as sandbox:
        results = await login(sandbox, tmp_path)
        assert all(r.ok for r in results.values()), results
        store = TokenStore(tmp_path / "tokens")
        first, second = (store.load(name) for name in ("sandbox-1", "sandbox-2"))
        assert first is not None and second is not None

        # The sync flavour, from a thread without an event loop (as a host without one).
        import anyio.to_thread

        result = await anyio.to_thread.run_sync(
            lambda: runner.logout_sync("sandbox-1", store=store)
        )
        assert result.revoked == ("refresh_token", "access_token")
        await assert_dead(sandbox, "sandbox-1", first)

        done = await anyio.to_thread.run_sync(
            lambda: run_cli("logout", "sandbox-2", "--store", str(store.directory))
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.splitlines() == [
            "sandbox-2: revoked refresh token",
            "sandbox-2: revoked access token",
            "sandbox-2: logged out",
        ]
        assert done.stderr == ""
        await assert_dead(sandbox, "sandbox-2", second)
        assert not any(n.endswith(".json") for n in files_of(store))


async def test_logout_of_a_hermes_login_revokes_it(tmp_path: Path) -> None:
    home = tmp_path / "hermes"
    with Sandbox(servers=1) as sandbox:
        await hermes_login(sandbox, "sandbox-1", home / "mcp-tokens", "notes.app")
        store = HermesTokenStore(home)
        stored = store.load("notes_app", server_url=sandbox.server("sandbox-1").url)
        assert stored is not None and stored.granted_by is not None

        import anyio.to_thread

        done = await anyio.to_thread.run_sync(
            lambda: run_cli("logout", "--all", "--hermes-home", str(home))
        )

        assert done.returncode == 0, done.stdout + done.stderr
        assert "notes_app: revoked refresh token" in done.stdout
        assert "notes_app: logged out" in done.stdout
        assert files_of(store) == ["notes_app.json.refresh.lock"]  # hermes's lock stays
        await assert_dead(sandbox, "sandbox-1", stored)


# --- not revoked: the files go all the same, and what is alive is said --------------------------


async def test_a_revocation_endpoint_answering_503_leaves_a_warning(tmp_path: Path) -> None:
    with Sandbox(servers=1, overrides={"sandbox-1": {"revocation": "unavailable"}}) as sandbox:
        store, name, stored = await logged_in(sandbox, tmp_path)

        with pytest.warns(RevocationWarning, match="may still be alive") as caught:
            result = await runner.logout(name, store=store)

        assert result.removed and store.load(name) is None
        assert result.revoked == ()
        assert all(t.temporary and t.retry_after == 30 for t in result.tokens)
        assert "refresh token and access token" in str(caught[0].message)
        assert "HTTP 503" in str(caught[0].message)
        await assert_alive(sandbox, name, stored)  # the server really revoked nothing


async def test_a_server_that_is_down_leaves_a_warning_and_no_files(tmp_path: Path) -> None:
    with Sandbox(servers=1) as sandbox:
        store, name, _ = await logged_in(sandbox, tmp_path)
    # The sandbox is stopped: its port refuses connections.

    import anyio.to_thread

    done = await anyio.to_thread.run_sync(
        lambda: run_cli("logout", name, "--store", str(store.directory))
    )

    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"{name}: refresh token not revoked: the revocation request failed")
    assert lines[1].startswith(f"{name}: access token not revoked")
    assert lines[2] == f"{name}: logged out"
    assert "warning:" in done.stderr and "may still be alive" in done.stderr
    assert "is the server down?" in done.stderr
    assert store.load(name) is None


async def test_no_revocation_endpoint_is_said_without_a_warning(tmp_path: Path) -> None:
    with Sandbox(servers=1, overrides={"sandbox-1": {"revocation": "off"}}) as sandbox:
        store, name, stored = await logged_in(sandbox, tmp_path)
        assert stored.oauth_metadata is not None
        assert stored.oauth_metadata.revocation_endpoint is None

        result = await runner.logout(name, store=store)  # warnings are errors here

        assert result.removed and result.revoked == ()
        assert all("no revocation endpoint" in t.why and not t.sent for t in result.tokens)
        assert store.load(name) is None


async def test_a_token_goes_to_no_issuer_but_the_one_that_granted_it(tmp_path: Path) -> None:
    with Sandbox(servers=1) as sandbox:
        store, name, stored = await logged_in(sandbox, tmp_path)
        # The stored metadata now names an issuer that did not grant these tokens (a record
        # rewritten after a server moved, say): its revocation endpoint gets nothing.
        store.save(name, stored.replace(granted_by="http://127.0.0.1:9/other"))

        with pytest.warns(RevocationWarning, match="did not grant"):
            result = await runner.logout(name, store=store)

        assert result.removed and not any(t.sent for t in result.tokens)
        await assert_alive(sandbox, name, stored)


async def test_logout_without_a_login_says_so(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens")
    result = await runner.logout("nothing-here", store=store)
    assert not result.had_login and not result.removed and result.tokens == ()


def test_logout_sync_refuses_a_running_event_loop() -> None:
    import asyncio

    async def inside() -> Any:
        return runner.logout_sync("x")

    with pytest.raises(RuntimeError, match="running event loop"):
        asyncio.run(inside())
