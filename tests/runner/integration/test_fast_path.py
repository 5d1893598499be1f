"""The fast path of authorize_many against real sandbox servers: stored logins answered from
the parent (no zygote, no child, no lease), expired ones refreshed there, a refused refresh
logged in again, and one login per server across processes (single flight, take-over)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

import runner._io._http
from portlease import Registry
from portlease.registry import Registry as RegistryClass
from runner import TokenStore
from runner._io._http import tls_context
from runner.errors import NeedsInteraction
from runner.sandbox import Sandbox, list_tools_with_token

from support.flows import kill_all, wait_processes_gone
from support.logins import SandboxBrowser, expire, login
from support.parents import ParentProcess, start_parent
from support.waiting import wait_until

pytestmark = pytest.mark.anyio


class ProcessWatch:
    """Every descendant process seen while the block runs (polled from a thread every
    few milliseconds: a zygote lives a second or more, a login child as long as its
    login), and every port lease acquired (a spy on ``Registry.acquire``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seen: dict[int, str] = {}
        self.leases: list[str] = []
        self._stop = threading.Event()
        original = RegistryClass.acquire

        def acquire(registry: Registry, owner: str, **kwargs: Any) -> Any:
            self.leases.append(owner)
            return original(registry, owner, **kwargs)

        monkeypatch.setattr(RegistryClass, "acquire", acquire)

    def _poll(self) -> None:
        me = psutil.Process()
        while True:
            for child in me.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    self.seen.setdefault(child.pid, " ".join(child.cmdline()))
            if self._stop.wait(0.003):
                return

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        thread = threading.Thread(target=self._poll, daemon=True)
        thread.start()
        try:
            yield
        finally:
            self._stop.set()
            thread.join(5)


def counts(sandbox: Sandbox) -> dict[str, dict[str, int]]:
    return {server.name: dict(sandbox.grant_counts(server.name)) for server in sandbox.servers}


async def test_a_restart_with_valid_stored_logins_starts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Sandbox(servers=4) as sandbox:
        first = await login(sandbox, tmp_path)
        assert all(r.ok and r.interactive for r in first.values()), first
        before = counts(sandbox)
        assert all(c == {"authorize": 1, "authorization_code": 1, "refresh_token": 0}
                   for c in before.values()), before  # fmt: skip

        watch = ProcessWatch(monkeypatch)
        browser = SandboxBrowser(sandbox)
        started = time.monotonic()
        with watch.watching():
            again = await login(sandbox, tmp_path, browser=browser)
        elapsed = time.monotonic() - started

        assert watch.seen == {}, f"processes started: {watch.seen}"
        assert watch.leases == []
        assert Registry(tmp_path / "leases").list(stale=True) == []
        assert counts(sandbox) == before  # not a request that grants anything
        assert browser.calls == []
        for name, result in again.items():
            assert result.ok and not result.interactive and result.port is None, result
            earlier = first[name].tokens
            assert result.tokens is not None and earlier is not None
            assert result.tokens.access_token == earlier.access_token
        assert elapsed < 1.0, elapsed  # milliseconds, in fact (scripts/bench_restart.py)


async def test_a_short_lived_token_is_used_not_refreshed_at_every_call(
    tmp_path: Path,
) -> None:
    # The margin is at most a quarter of a token's lifetime (runner._core._renewal), the rule the
    # provider follows too: a 60 s token is not "expiring" as soon as it is issued.
    with Sandbox(servers=1, access_token_ttl=60) as sandbox:
        name = sandbox.servers[0].name
        first = (await login(sandbox, tmp_path))[name]
        again = (await login(sandbox, tmp_path))[name]
        assert again.ok and again.tokens == first.tokens
        assert sandbox.grant_counts(name)["refresh_token"] == 0


async def test_an_expired_token_is_refreshed_once_in_the_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ttl = 3600
    with Sandbox(servers=1, access_token_ttl=ttl) as sandbox:
        name = sandbox.servers[0].name
        first = (await login(sandbox, tmp_path))[name]
        assert first.ok and first.tokens is not None
        store = TokenStore(tmp_path / "tokens")
        expire(store, name)

        watch = ProcessWatch(monkeypatch)
        browser = SandboxBrowser(sandbox)
        with watch.watching():
            again = (await login(sandbox, tmp_path, browser=browser))[name]

        assert again.ok and not again.interactive and again.port is None, again
        assert watch.seen == {} and watch.leases == []
        assert browser.calls == []
        assert first.tokens is not None
        assert sandbox.grant_counts(name) == {
            "authorize": 1,
            "authorization_code": 1,
            "refresh_token": 1,
        }
        assert again.tokens is not None
        assert again.tokens.access_token != first.tokens.access_token
        saved = store.load(name)
        assert saved is not None and saved.tokens == again.tokens  # saved
        assert saved.expires_at is not None and saved.expires_at > time.time() + ttl - 10
        assert await list_tools_with_token(sandbox.servers[0].url, again.tokens.access_token)


async def test_a_revoked_refresh_token_means_a_new_browser_login(tmp_path: Path) -> None:
    with Sandbox(servers=1) as sandbox:
        name = sandbox.servers[0].name
        first = (await login(sandbox, tmp_path))[name]
        assert first.ok
        store = TokenStore(tmp_path / "tokens")
        expire(store, name)
        registered = store.load(name)
        assert registered is not None and registered.client_info is not None
        sandbox.revoke_refresh_tokens(name)

        browser = SandboxBrowser(sandbox)
        again = (await login(sandbox, tmp_path, browser=browser))[name]

        assert again.ok and again.interactive and again.port is not None, again
        assert browser.calls == [name]
        assert sandbox.grant_counts(name) == {
            "authorize": 2,
            "authorization_code": 2,
            "refresh_token": 0,
        }
        saved = store.load(name)
        assert saved is not None and again.tokens is not None
        assert saved.tokens == again.tokens
        assert saved.client_info is not None  # the registration was kept, not redone
        assert saved.client_info.client_id == registered.client_info.client_id
    assert Registry(tmp_path / "leases").list(stale=True) == []


async def test_a_revoked_refresh_token_without_a_person_needs_interaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Sandbox(servers=1) as sandbox:
        name = sandbox.servers[0].name
        assert (await login(sandbox, tmp_path))[name].ok
        store = TokenStore(tmp_path / "tokens")
        expire(store, name)
        sandbox.revoke_refresh_tokens(name)
        before = store.load(name)

        watch = ProcessWatch(monkeypatch)
        with watch.watching():
            again = (await login(sandbox, tmp_path, interactive=False))[name]

        assert isinstance(again.error, NeedsInteraction), again
        assert not again.ok and again.tokens is None
        assert watch.seen == {} and watch.leases == []
        assert sandbox.grant_counts(name)["authorize"] == 1
        saved = store.load(name)  # nothing is written before a new login succeeds
        assert saved is not None and before is not None
        assert saved.to_dict() == before.to_dict()


# --- two processes, one server --------------------------------------------------------------


def parent(
    tmp_path: Path, sandbox: Sandbox, *, browser: str, gate: Path | None = None
) -> ParentProcess:
    """A host's process logging in to ``sandbox`` (one store and registry for all the
    parents of a test); every browser call goes to ``browser.log``."""
    return start_parent(
        tmp_path,
        sandbox.config(),
        mode="sync",
        browser=browser,
        interactive=True,
        log=tmp_path / "browser.log",
        gate=gate,
        ports=[int(s.url.split(":")[2].split("/")[0]) for s in sandbox.servers],
    )


def blocked_on(lock_file: Path, pid: int) -> bool:
    """Whether ``pid`` waits for the flock on ``lock_file`` (a blocked entry in
    /proc/locks: ``N: -> FLOCK ADVISORY WRITE PID MAJ:MIN:INODE ...``)."""
    try:
        inode = os.stat(lock_file).st_ino
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return False
    for line in lines:
        fields = line.split()
        if "->" in fields and "FLOCK" in fields:
            rest = fields[fields.index("->") + 1 :]
            if len(rest) >= 5 and rest[3] == str(pid) and rest[4].endswith(f":{inode}"):
                return True
    return False


def browser_log(tmp_path: Path) -> list[str]:
    path = tmp_path / "browser.log"
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.timeout(120)
def test_two_processes_logging_in_to_one_server_open_one_browser_flow(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    with Sandbox(servers=1) as sandbox:
        name = sandbox.servers[0].name
        lock_file = tmp_path / "tokens" / f"{name}.lock"
        leader = parent(tmp_path, sandbox, browser="consent", gate=gate)
        follower: ParentProcess | None = None
        try:
            # The leader holds the server's lock while its browser waits at the gate.
            leader.expect_lines("BROWSER ", 1, timeout=30)
            follower = parent(tmp_path, sandbox, browser="consent")
            assert wait_until(lambda: blocked_on(lock_file, follower.proc.pid), 30), (
                f"the second process never waited for the lock; stderr:\n{follower.stderr}"
            )
            with open(gate, "w") as opened:  # let the leader's consent go on
                opened.write("go")
            led, followed = leader.results()[name], follower.results()[name]
        finally:
            for process in (leader, follower):
                if process is not None:
                    process.close()
        assert led["ok"] and led["interactive"], (led, leader.stderr)
        assert followed["ok"] and not followed["interactive"], (followed, follower.stderr)
        assert followed["token"] == led["token"]  # the same tokens, adopted from the store
        assert sandbox.grant_counts(name)["authorize"] == 1
        assert sandbox.grant_counts(name)["authorization_code"] == 1
        assert browser_log(tmp_path) == [name]
    assert Registry(tmp_path / "leases").list() == []


@pytest.mark.timeout(120)
def test_a_waiter_takes_over_from_a_killed_leader(tmp_path: Path) -> None:
    with Sandbox(servers=1) as sandbox:
        name = sandbox.servers[0].name
        lock_file = tmp_path / "tokens" / f"{name}.lock"
        leader = parent(tmp_path, sandbox, browser="block")
        follower: ParentProcess | None = None
        leader_family: set[int] = set()
        try:
            leader.expect_lines("BROWSER ", 1, timeout=30)  # it holds the lock, mid-login
            follower = parent(tmp_path, sandbox, browser="consent")
            assert wait_until(lambda: blocked_on(lock_file, follower.proc.pid), 30), (
                f"the second process never waited for the lock; stderr:\n{follower.stderr}"
            )
            leader_family = {p.pid for p in psutil.Process(leader.proc.pid).children(True)}
            os.kill(leader.proc.pid, signal.SIGKILL)
            took_over = follower.results()[name]
            # The leader's zygote and child stop at its pipe's end of stream.
            assert wait_processes_gone(leader_family, 15) == []
        finally:
            for process in (leader, follower):
                if process is not None:
                    process.close()
            kill_all(leader_family)
        assert took_over["ok"] and took_over["interactive"], (took_over, follower.stderr)
        assert sandbox.grant_counts(name)["authorize"] == 1  # the leader never got consent
        assert sandbox.grant_counts(name)["authorization_code"] == 1
        assert browser_log(tmp_path) == [name, name]  # the leader's call, then the waiter's
        saved = TokenStore(tmp_path / "tokens").load(name)
        assert saved is not None
        assert hashlib.sha256(saved.tokens.access_token.encode()).hexdigest() == took_over["token"]
    assert Registry(tmp_path / "leases").list() == []  # no live lease left


async def test_nothing_stored_without_a_person_needs_interaction_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Sandbox(servers=2) as sandbox:
        watch = ProcessWatch(monkeypatch)
        with watch.watching():
            results = await login(sandbox, tmp_path, interactive=False)
        for name, result in results.items():
            assert isinstance(result.error, NeedsInteraction), (name, result.error)
            assert name in str(result.error) and "interactive=False" in str(result.error)
            assert sandbox.grant_counts(name)["authorize"] == 0
        assert watch.seen == {} and watch.leases == []


async def test_a_call_builds_one_tls_context_for_all_its_refreshes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Sandbox(servers=3) as sandbox:
        assert all(r.ok for r in (await login(sandbox, tmp_path)).values())
        store = TokenStore(tmp_path / "tokens")
        for server in sandbox.servers:
            expire(store, server.name)
        built: list[ssl.SSLContext] = []

        def counting_tls_context() -> ssl.SSLContext:
            built.append(tls_context())
            return built[-1]

        monkeypatch.setattr(runner._io._http, "tls_context", counting_tls_context)
        again = await login(sandbox, tmp_path)
        assert all(r.ok and not r.interactive for r in again.values()), again
        for server in sandbox.servers:
            assert sandbox.grant_counts(server.name)["refresh_token"] == 1
        assert len(built) == 1
