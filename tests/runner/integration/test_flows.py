"""authorize_many end to end against the sandbox: real children, sockets and leases."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from portlease import Registry
from runner import TokenStore, authorize_many, authorize_many_sync
from runner.errors import CallbackPortBusy, InvalidServerSpec
from runner.events import (
    CallbackReceived,
    Finished,
    Listening,
    LoggingIn,
    Refreshing,
    StoredLoginNotReused,
    UsingStoredLogin,
    WaitingForBrowser,
)
from runner.sandbox import Sandbox, list_tools_with_token

from support.flows import ProgressLog
from support.logins import SandboxBrowser, login, no_pastes

pytestmark = pytest.mark.anyio


def runner_children() -> list[psutil.Process]:
    me = psutil.Process()
    return [
        p
        for p in me.children(recursive=True)
        # Zygote-forked children keep the zygote's command line.
        if any(part in ("runner._child._login", "runner._child._zygote") for part in _cmdline(p))
    ]


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


@pytest.mark.timeout(240)
async def test_32_concurrent_logins(tmp_path: Path) -> None:
    with Sandbox(servers=32) as sandbox:
        results = await login(sandbox, tmp_path, timeout=180)
        assert [r.name for r in results.values()] == [s.name for s in sandbox.servers]
        failed = {name: r.error for name, r in results.items() if not r.ok}
        assert not failed
        ports = {r.port for r in results.values()}
        assert len(ports) == 32 and None not in ports
        for server in sandbox.servers:
            result = results[server.name]
            assert result.tokens is not None and result.interactive
            # Every token reached the login that asked for it: it was issued by that
            # login's server, and it works there.
            assert result.tokens.access_token in sandbox.issued_tokens(server.name)
            assert await list_tools_with_token(server.url, result.tokens.access_token)
    assert runner_children() == []
    assert Registry(tmp_path / "leases").list(stale=True) == []


@pytest.mark.parametrize("start_method", ["zygote", "spawn"])
async def test_both_start_methods_log_in(tmp_path: Path, start_method: str) -> None:
    progress = ProgressLog()
    with Sandbox(servers=3) as sandbox:
        results = await login(sandbox, tmp_path, start_method=start_method, progress=progress)
    assert all(r.ok for r in results.values()), results
    for name, result in results.items():
        told = [event for event in progress.events if event.name == name]
        assert [type(event) for event in told] == [
            LoggingIn,
            Listening,
            WaitingForBrowser,
            CallbackReceived,
            Finished,
        ], told
        assert told[-1] == Finished(name, result)
        assert told[1] == Listening(name, f"http://127.0.0.1:{result.port}/callback")
    assert runner_children() == []
    assert Registry(tmp_path / "leases").list(stale=True) == []


async def test_stored_tokens_log_in_silently_and_expired_ones_refresh(tmp_path: Path) -> None:
    with Sandbox(servers=1) as sandbox:
        name = sandbox.servers[0].name
        first = (await login(sandbox, tmp_path))[name]
        assert first.ok and first.interactive and first.tokens is not None

        browser = SandboxBrowser(sandbox)
        progress = ProgressLog()
        again = (await login(sandbox, tmp_path, browser=browser, progress=progress))[name]
        assert again.ok and not again.interactive and browser.calls == []
        assert progress.events == [
            UsingStoredLogin(name, "using its stored login"),
            Finished(name, again),
        ]
        assert again.tokens is not None
        assert again.tokens.access_token == first.tokens.access_token

        store = TokenStore(tmp_path / "tokens")
        stored = store.load(name)
        assert stored is not None
        stored.expires_at = 1.0  # long expired
        store.save(name, stored)
        progress = ProgressLog()
        refreshed = (await login(sandbox, tmp_path, browser=browser, progress=progress))[name]
        assert refreshed.ok and not refreshed.interactive and browser.calls == []
        assert progress.events == [Refreshing(name), Finished(name, refreshed)]
        assert refreshed.tokens is not None
        assert refreshed.tokens.access_token != first.tokens.access_token
        assert await list_tools_with_token(sandbox.servers[0].url, refreshed.tokens.access_token)


def _forget_tokens(store: TokenStore, name: str) -> str:
    """Make the stored tokens useless (expired, no refresh); returns the stored client_id."""
    stored = store.load(name)
    assert stored is not None and stored.client_info is not None
    stored.tokens.access_token = "revoked"
    stored.tokens.refresh_token = None
    stored.expires_at = 1.0  # long expired: a new login, not the fast path
    store.save(name, stored)
    return stored.client_info.client_id or ""


async def test_a_stored_registration_gets_its_port_back(tmp_path: Path) -> None:
    with Sandbox(servers=1) as sandbox:
        name = sandbox.servers[0].name
        first = (await login(sandbox, tmp_path))[name]
        assert first.ok
        store = TokenStore(tmp_path / "tokens")
        client_id = _forget_tokens(store, name)
        again = (await login(sandbox, tmp_path))[name]
        assert again.ok and again.interactive
        assert again.port == first.port  # the registered redirect URI still works
        stored = store.load(name)
        assert stored is not None and stored.client_info is not None
        assert stored.client_info.client_id == client_id  # no new registration


async def test_a_taken_registered_port_means_a_new_registration(tmp_path: Path) -> None:
    with Sandbox(servers=1) as sandbox:
        name = sandbox.servers[0].name
        first = (await login(sandbox, tmp_path))[name]
        assert first.ok and first.port is not None
        store = TokenStore(tmp_path / "tokens")
        client_id = _forget_tokens(store, name)
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", first.port))
            squatter.listen()
            again = (await login(sandbox, tmp_path))[name]
        assert again.ok and again.port != first.port
        stored = store.load(name)
        assert stored is not None and stored.client_info is not None
        assert stored.client_info.client_id != client_id


async def test_a_fixed_port_held_by_another_process_is_callback_port_busy(tmp_path: Path) -> None:
    with Sandbox(servers=2) as sandbox, socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        first, second = sandbox.servers
        servers = {
            first.name: {"url": first.url, "oauth": {"redirect_port": port}},
            second.name: {"url": second.url},
        }
        results = await login(sandbox, tmp_path, servers=servers, timeout=30)
        busy = results[first.name]
        assert isinstance(busy.error, CallbackPortBusy) and str(port) in str(busy.error)
        assert busy.elapsed < 10
        assert results[second.name].ok  # one login's failure is its own


async def test_logins_sharing_a_fixed_port_take_turns(tmp_path: Path) -> None:
    with Sandbox(servers=3) as sandbox:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        servers = {
            s.name: {"url": s.url, "oauth": {"redirect_port": port}} for s in sandbox.servers
        }
        results = await login(sandbox, tmp_path, servers=servers)
        assert all(r.ok for r in results.values()), results
        assert {r.port for r in results.values()} == {port}


async def test_bad_server_entries_raise_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(InvalidServerSpec, match="redirect_prot"):
        await authorize_many(
            {"a": {"url": "http://127.0.0.1:1/mcp", "oauth": {"redirect_prot": 1}}},
            store=TokenStore(tmp_path),
            registry=Registry(tmp_path / "leases"),
        )
    with pytest.raises(InvalidServerSpec, match="timeout"):
        await authorize_many([], timeout=0, registry=Registry(tmp_path / "leases"))
    assert Registry(tmp_path / "leases").list(stale=True) == []


async def test_a_bad_timeout_is_refused_before_the_default_registry_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    unmade = tmp_path / "default-registry"
    monkeypatch.setenv("PORTLEASE_DIR", str(unmade))
    with pytest.raises(InvalidServerSpec, match="timeout"):
        await authorize_many([], timeout=-1, store=TokenStore(tmp_path / "tokens"))
    assert not unmade.exists()


async def test_the_sync_entry_point_refuses_a_running_loop(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="await authorize_many"):
        authorize_many_sync([], registry=Registry(tmp_path))


async def test_a_progress_of_name_and_sentence_still_works_with_a_deprecation(
    tmp_path: Path,
) -> None:
    said: list[tuple[str | None, str]] = []

    def progress(name: str | None, sentence: str) -> None:  # before events
        said.append((name, sentence))

    with Sandbox(servers=1) as sandbox:
        name = sandbox.servers[0].name
        with pytest.warns(DeprecationWarning, match=r"progress\(name, sentence\)") as caught:
            # Called here, not through support.logins.login: the warning names the caller.
            results = await authorize_many(
                sandbox.config(),
                store=TokenStore(tmp_path / "tokens"),
                registry=Registry(tmp_path / "leases"),
                browser=SandboxBrowser(sandbox),
                pastes=no_pastes(),
                timeout=60,
                progress=progress,
            )
    assert results[name].ok
    assert len(caught) == 1 and caught[0].filename == __file__  # points at the host's call
    assert said[0] == (name, "nothing usable is stored; logging in")
    assert said[-1] == (name, "logged in")
    assert (name, "waiting for the login in the browser") in said


def test_the_sync_entry_point(tmp_path: Path) -> None:
    with Sandbox(servers=2) as sandbox:
        results = authorize_many_sync(
            sandbox.config(),
            store=TokenStore(tmp_path / "tokens"),
            registry=Registry(tmp_path / "leases"),
            browser=SandboxBrowser(sandbox),
            pastes=no_pastes(),
            timeout=60,
        )
    assert all(r.ok for r in results.values())
    assert runner_children() == []
    assert Registry(tmp_path / "leases").list(stale=True) == []


async def test_a_stored_login_of_another_server_url_is_not_reused(tmp_path: Path) -> None:
    with Sandbox(servers=1) as sandbox:
        name = sandbox.servers[0].name
        assert (await login(sandbox, tmp_path))[name].ok
    with Sandbox(servers=1) as other:  # same name, another server
        browser = SandboxBrowser(other)
        progress = ProgressLog()
        result = (await login(other, tmp_path, browser=browser, progress=progress))[name]
        assert result.ok
        # The old server's tokens were never sent to this one.
        assert StoredLoginNotReused(name, sandbox.servers[0].url) in progress.events
        assert browser.calls == [name]  # a fresh browser login, not the old tokens
        assert result.tokens is not None
        assert result.tokens.access_token in other.issued_tokens(name)


_SYSTEM_BROWSER_HOST = """
import json, sys
import anyio
from portlease import Registry
from runner import TokenStore, authorize_many

config, tokens, leases = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]

async def nothing():
    return
    yield

async def main() -> None:
    results = await authorize_many(config, store=TokenStore(tokens), registry=Registry(leases),
                                   pastes=nothing(), timeout=30)
    print(json.dumps({name: result.ok for name, result in results.items()}))

anyio.run(main)
"""


def test_concurrent_logins_each_open_the_system_browser(tmp_path: Path) -> None:
    # The default browser is Python's webbrowser, whose first open in a process (3.11)
    # returned False at once to every thread but one that called it meanwhile: 7 of 8
    # logins started together said "could not open a browser" and waited for nothing.
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    script = tmp_path / "browser.sh"
    script.write_text(f'#!/bin/sh\nexec {curl} -s -o /dev/null -L --max-time 30 "$1"\n')
    script.chmod(0o755)
    with Sandbox(servers=6) as sandbox:
        done = subprocess.run(
            [sys.executable, "-c", _SYSTEM_BROWSER_HOST, json.dumps(sandbox.config()),
             str(tmp_path / "tokens"), str(tmp_path / "leases")],
            env={**os.environ, "BROWSER": str(script)},
            capture_output=True, text=True, timeout=90, check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == dict.fromkeys(
        sandbox.config(), True
    ), done.stderr[-2000:]


_BROWSERS_AFTER_A_CALL = """
import sys, threading, webbrowser
import anyio
from portlease import Registry
from runner import TokenStore, authorize_many

anyio.run(lambda: authorize_many([], store=TokenStore(sys.argv[1]), registry=Registry(sys.argv[2])))
barrier = threading.Barrier(8)
opened = []

def open_one() -> None:
    barrier.wait()  # eight logins' browser calls at once
    opened.append(webbrowser.open("http://127.0.0.1:9/authorize"))

threads = [threading.Thread(target=open_one) for _ in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(opened.count(True))
"""


def test_a_call_registers_the_system_browsers_before_logins_open_them(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _BROWSERS_AFTER_A_CALL, str(tmp_path / "t"), str(tmp_path / "l")],
        env={**os.environ, "BROWSER": "true"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "8"
