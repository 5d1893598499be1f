"""No grant lost, none sent astray: the faults that used to cost a login, on real servers.

Each test stores a login the way a host or hermes-agent would, breaks something (the lock's
path, the authorization server's answer, the local bookkeeping, the issuer) and checks
that the grant the user gave survives: the refresh token is kept unless the server said it
is dead, nothing is written over a record that was not re-read under its lock, and no
refresh token reaches an issuer that did not grant it. The sandbox's counters say what the
servers really saw.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from portlease import Registry
from runner import FlowResult, ServerSpec, TokenStore, authorize_many
from runner._parent._refresher import refresh_login
from runner.errors import FlowTimeout, NeedsInteraction, RefreshFailed
from runner.events import Event, Refreshing
from runner.hermes_store import HermesTokenStore
from runner.sandbox import Sandbox

from support.hermes import hermes_login, hermes_reads
from support.logins import expire, no_pastes, refused_browser
from support.parents import released_together

pytestmark = pytest.mark.anyio


async def log_in(sandbox: Sandbox, store: TokenStore, tmp_path: Path) -> tuple[str, str]:
    """One login through the runner; the server's name and URL."""
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
    return name, entry["url"]


# --- the lock ----------------------------------------------------------------------------------

_PARENT = textwrap.dedent(
    """
    import json, os, sys
    import anyio
    from portlease import Registry
    from runner import TokenStore, authorize_many

    store_dir, leases, name, url, barrier = sys.argv[1:6]

    async def main() -> None:
        print("ready", flush=True)
        assert os.read(int(barrier), 1) == b""  # released together
        results = await authorize_many(
            {name: {"url": url}}, store=TokenStore(store_dir), registry=Registry(leases),
            interactive=False, timeout=30)
        result = results[name]
        print(json.dumps({"ok": result.ok, "error": type(result.error).__name__}), flush=True)

    anyio.run(main)
    """
)


def run_parents(store: TokenStore, leases: Path, name: str, url: str) -> list[dict[str, Any]]:
    """Four processes authorizing one server at once (released together); their reports.
    Blocking: run it in a thread."""
    done = released_together(_PARENT, [str(store.directory), str(leases), name, url], 4)
    for each in done:
        assert each.returncode == 0, each.stderr[-2000:]
    return [json.loads(each.stdout.strip().splitlines()[-1]) for each in done]


@pytest.mark.timeout(120)
async def test_an_unusable_lock_fails_closed_in_every_process(tmp_path: Path) -> None:
    with Sandbox(servers=1) as sandbox:
        store = TokenStore(tmp_path / "tokens")
        name, url = await log_in(sandbox, store, tmp_path)
        before = expire(store, name)
        store.lock_path_for(name).unlink(missing_ok=True)
        store.lock_path_for(name).mkdir()  # a directory where the lock file should be

        reports = await anyio.to_thread.run_sync(run_parents, store, tmp_path / "leases", name, url)

        assert reports == [{"ok": False, "error": "LoginLockUnavailable"}] * 4
        assert sandbox.grant_counts(name)["refresh_token"] == 0  # nobody refreshed unlocked
        kept = store.load(name)
        assert kept is not None and kept.to_dict() == before.to_dict()
        # The grant is alive: its refresh token still works.
        assert (await refresh_login(kept, timeout=30)).tokens.access_token


# --- a new login replaces an old one only once it succeeded -------------------------------------


async def test_an_abandoned_relogin_leaves_the_old_login_as_it_was(tmp_path: Path) -> None:
    with Sandbox(servers=1) as sandbox:
        store = TokenStore(tmp_path / "tokens")
        name, _ = await log_in(sandbox, store, tmp_path)
        before = expire(store, name)
        sandbox.revoke_refresh_tokens(name)  # the refresh is refused: a person must log in

        def nobody(url: str, spec: ServerSpec) -> None:
            """A person who never finishes the login."""

        results = await authorize_many(
            sandbox.config(),
            store=store,
            registry=Registry(tmp_path / "leases"),
            browser=nobody,
            pastes=no_pastes(),
            timeout=3,
        )
        assert isinstance(results[name].error, FlowTimeout)
        kept = store.load(name)
        assert kept is not None and kept.to_dict() == before.to_dict()


# --- hermes-agent's files -----------------------------------------------------------------------


def hermes_files(tokens_dir: Path, stem: str) -> dict[str, bytes]:
    """The contents of hermes's login files of ``stem`` (not its lock file)."""
    return {
        path.name: path.read_bytes()
        for path in tokens_dir.iterdir()
        if path.name.startswith(f"{stem}.") and path.name.endswith(".json")
    }


async def test_a_hermes_login_without_metadata_is_refreshed_not_stripped(tmp_path: Path) -> None:
    tokens_dir = tmp_path / "hermes" / "mcp-tokens"
    with Sandbox(servers=1) as sandbox:
        server = sandbox.servers[0]
        await hermes_login(sandbox, server.name, tokens_dir, "notes")
        # hermes's own build_oauth_auth writes no .meta.json; the login has expired.
        (tokens_dir / "notes.meta.json").unlink()
        token_file = tokens_dir / "notes.json"
        raw = json.loads(token_file.read_text())
        raw["expires_at"] = time.time() - 10
        token_file.write_text(json.dumps(raw))
        store = HermesTokenStore(tmp_path / "hermes", server_urls={"notes": server.url})

        results = await authorize_many(
            {"notes": {"url": server.url}},
            store=store,
            registry=Registry(tmp_path / "leases"),
            interactive=False,
            timeout=30,
        )

        assert results["notes"].ok, results["notes"].error
        assert sandbox.grant_counts(server.name)["refresh_token"] == 1
        token, issuer = hermes_reads(tokens_dir, "notes")  # hermes's own reading
        assert token.refresh_token and token.access_token == results["notes"].tokens.access_token  # type: ignore[union-attr]
        assert issuer is not None and issuer.rstrip("/") == server.url.rsplit("/", 1)[0]
        assert (tokens_dir / "notes.meta.json").exists()  # found again, and kept


async def test_a_hermes_refresh_token_is_not_sent_to_another_issuer(tmp_path: Path) -> None:
    tokens_dir = tmp_path / "hermes" / "mcp-tokens"
    with Sandbox(servers=2) as sandbox:
        granting, other = sandbox.servers
        await hermes_login(sandbox, granting.name, tokens_dir, "notes")
        # The server's metadata now names another authorization server (a takeover, a
        # migration): its token endpoint must not get the refresh token.
        await hermes_login(sandbox, other.name, tokens_dir, "elsewhere")
        (tokens_dir / "notes.meta.json").write_bytes(
            (tokens_dir / "elsewhere.meta.json").read_bytes()
        )
        raw = json.loads((tokens_dir / "notes.json").read_text())
        raw["expires_at"] = time.time() - 10
        (tokens_dir / "notes.json").write_text(json.dumps(raw))
        before = {
            p.name: p.read_bytes() for p in tokens_dir.iterdir() if p.name.startswith("notes")
        }
        store = HermesTokenStore(tmp_path / "hermes", server_urls={"notes": granting.url})

        results = await authorize_many(
            {"notes": {"url": granting.url}},
            store=store,
            registry=Registry(tmp_path / "leases"),
            interactive=False,
            timeout=30,
        )

        assert isinstance(results["notes"].error, NeedsInteraction), results["notes"]
        assert "authorization server has changed" in str(results["notes"].error)
        assert sandbox.refresh_presentations(other.name) == {}
        assert sandbox.refresh_presentations(granting.name) == {}
        assert hermes_files(tokens_dir, "notes") == before


# --- what the token endpoint answers ------------------------------------------------------------


async def refresh_once(sandbox: Sandbox, tmp_path: Path, **kwargs: Any) -> FlowResult:
    """``authorize_many`` of the sandbox's one server, with no person at hand."""
    results = await authorize_many(
        sandbox.config(),
        store=TokenStore(tmp_path / "tokens"),
        registry=Registry(tmp_path / "leases"),
        browser=refused_browser,
        pastes=no_pastes(),
        timeout=30,
        **kwargs,
    )
    return results[sandbox.servers[0].name]


@pytest.mark.parametrize("fault", ["invalid_request", "html", "server_error"])
async def test_a_refusal_that_is_not_invalid_grant_keeps_the_grant(
    tmp_path: Path, fault: str
) -> None:
    with Sandbox(servers=1, refresh_fault=fault) as sandbox:
        store = TokenStore(tmp_path / "tokens")
        name, _ = await log_in(sandbox, store, tmp_path)
        before = expire(store, name)

        result = await refresh_once(sandbox, tmp_path, interactive=False)

        assert isinstance(result.error, RefreshFailed | NeedsInteraction), result
        if fault == "server_error":  # a failure of the moment: nobody is asked to log in
            assert isinstance(result.error, RefreshFailed) and result.error.temporary
        kept = store.load(name)
        assert kept is not None and kept.to_dict() == before.to_dict()
        # Sent once, by the parent; no child, no second presentation.
        assert list(sandbox.refresh_presentations(name).values()) == [1]


async def test_after_a_500_the_login_sends_the_refresh_token_no_second_time(
    tmp_path: Path,
) -> None:
    # An interactive call: before, the child's SDK sent the same refresh token again after the
    # parent's refresh failed, which a rotating server treats as reuse.
    with Sandbox(servers=1, refresh_fault="server_error") as sandbox:
        store = TokenStore(tmp_path / "tokens")
        name, _ = await log_in(sandbox, store, tmp_path)
        expire(store, name)

        result = await refresh_once(sandbox, tmp_path)

        assert isinstance(result.error, RefreshFailed) and result.error.temporary
        assert list(sandbox.refresh_presentations(name).values()) == [1]
        assert sandbox.grant_counts(name)["authorize"] == 1  # no browser login either


async def test_an_unreadable_answer_is_not_a_reason_to_send_the_token_again(
    tmp_path: Path,
) -> None:
    with Sandbox(servers=1, refresh_fault="garbled_after_rotation") as sandbox:
        store = TokenStore(tmp_path / "tokens")
        name, _ = await log_in(sandbox, store, tmp_path)
        before = expire(store, name)

        result = await refresh_once(sandbox, tmp_path, interactive=False)

        assert not result.ok
        assert list(sandbox.refresh_presentations(name).values()) == [1]
        kept = store.load(name)
        assert kept is not None and kept.to_dict() == before.to_dict()


async def test_a_refusal_while_the_token_is_valid_keeps_both_until_it_expires(
    tmp_path: Path,
) -> None:
    # Seen with Cloudflare's MCP server (hermes-agent PR #110720): no refresh before expiry.
    with Sandbox(servers=1, refresh_fault="early_refusal", access_token_ttl=3600) as sandbox:
        store = TokenStore(tmp_path / "tokens")
        name, _ = await log_in(sandbox, store, tmp_path)
        stored = store.load(name)
        assert stored is not None
        stored.expires_at = time.time() + 20  # within the renewal margin, still valid
        store.save(name, stored)

        result = await refresh_once(sandbox, tmp_path, interactive=False)

        assert result.ok and result.tokens == stored.tokens  # used to its end
        kept = store.load(name)
        assert kept is not None and kept.to_dict() == stored.to_dict()
        assert sandbox.grant_counts(name)["refresh_token"] == 0


async def test_a_429_is_waited_out_within_the_timeout(tmp_path: Path) -> None:
    with Sandbox(servers=1, refresh_fault="rate_limited") as sandbox:
        store = TokenStore(tmp_path / "tokens")
        name, _ = await log_in(sandbox, store, tmp_path)
        expire(store, name)

        result = await refresh_once(sandbox, tmp_path, interactive=False)

        assert result.ok, result.error
        assert sandbox.grant_counts(name)["refresh_token"] == 1
        assert list(sandbox.refresh_presentations(name).values()) == [2]  # 429, then served


# --- logout and a refresh in flight -------------------------------------------------------------


@pytest.mark.timeout(90)
async def test_logout_waits_for_a_refresh_in_flight_which_writes_nothing_back(
    tmp_path: Path,
) -> None:
    with Sandbox(servers=1, refresh_delay=1.5) as sandbox:
        store = TokenStore(tmp_path / "tokens")
        name, _ = await log_in(sandbox, store, tmp_path)
        expire(store, name)
        refreshing = threading.Event()

        def progress(event: Event) -> None:
            if isinstance(event, Refreshing):
                refreshing.set()  # said under the server's lock, before the POST

        async with anyio.create_task_group() as tasks:
            results: list[FlowResult] = []

            async def refresh() -> None:
                results.append(await refresh_once(sandbox, tmp_path, progress=progress))

            tasks.start_soon(refresh)
            assert await anyio.to_thread.run_sync(refreshing.wait, 30)
            logout = await anyio.to_thread.run_sync(
                functools.partial(
                    subprocess.run,
                    [
                        sys.executable,
                        "-m",
                        "runner",
                        "logout",
                        name,
                        "--store",
                        str(store.directory),
                    ],
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
            )
        assert logout.returncode == 0, logout.stderr
        assert f"{name}: logged out" in logout.stdout
        assert results[0].ok  # the refresh finished first...
        assert store.load(name) is None  # ...and the logout that waited for it stands
