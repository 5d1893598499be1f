"""Logins from every xdist worker against ONE lease registry and ONE token store, under
hostile traffic, a killed child and a killed zygote (``scripts/stress.py`` at test size).

Designed for pytest-xdist, as ``test_portlease_stress.py``: every worker runs these tests
against the same two directories under the run's common base temp, so their leases share
one ``leases.json`` (and its lock) and their logins one store directory. A sandbox is one
process's event loop thread, so each test has its own; its servers are named after the
worker and the test, so each store file has one writer, except ``shared``: every test logs
in to its own server under that one name, so its login lock and its file are contended
across workers, and a record another worker saved (another server's) must never be used.

Each round, every login waits in a gated browser; meanwhile each listener gets hostile
requests (and keeps a half-open and a slowloris connection), one login's child is killed,
and in the first round the zygote too; then the consent goes on. After each round: every
login has exactly one result, only the killed one is ``FlowCrashed``, every token was
issued by its own server and no other (results and store files), no child, lease or
descriptor of the test is left. No timing is asserted; every wait is bounded.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import threading
from pathlib import Path
from urllib.parse import urlencode

import anyio
import anyio.from_thread
import anyio.lowlevel
import psutil
import pytest

from portlease import Registry
from runner import FlowResult, Runner, TokenStore
from runner.errors import FlowCrashed
from runner.sandbox import Sandbox

from support.flows import (
    HOST,
    ProgressLog,
    Reply,
    child_processes,
    http_request,
    kill_all,
    open_fds,
    process_gone,
    still_running,
)
from support.logins import SandboxBrowser, no_pastes
from support.waiting import wait_until
from support.xdist import shared_directory

pytestmark = [pytest.mark.anyio, pytest.mark.stress]

SERVERS = 8
ROUNDS = 3
SHARED = "shared"
#: Generous: on 2 busy cores (the whole suite under ``-n auto``) a step may take seconds.
WAIT = 45.0
LOGIN_TIMEOUT = 50.0


def shared_directories(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The lease and token directories every xdist worker of this run shares."""
    return (
        shared_directory(tmp_path_factory, "shared-login-leases"),
        shared_directory(tmp_path_factory, "shared-login-tokens"),
    )


def hostile(port: int, state: str, issuer: str) -> tuple[list[Reply], list[socket.socket]]:
    """Requests a listener must turn away, and two connections to keep open meanwhile."""
    kept = [socket.create_connection((HOST, port), timeout=10)]
    slow = socket.create_connection((HOST, port), timeout=10)
    kept.append(slow)
    forged = urlencode({"code": "EVIL", "state": state, "iss": issuer})
    slow.sendall(f"GET /callback?{forged} HTTP/1.1\r\nHost: {HOST}:{port}\r\n".encode())
    oversized = urlencode({"code": "EVIL", "state": state, "iss": issuer, "pad": "A" * 9000})
    wrong_state = urlencode({"code": "EVIL", "state": state + "x", "iss": issuer})
    replies = [
        http_request(port, "GET", "/favicon.ico", timeout=15),
        http_request(port, "GET", "/", timeout=15),
        http_request(port, "GET", f"/anything?{forged}", timeout=15),
        http_request(port, "GET", f"/callback?{wrong_state}", timeout=15),
        http_request(
            port, "GET", f"/callback?{forged}", host_header=f"evil.example:{port}", timeout=15
        ),
        http_request(port, "GET", f"/callback?{oversized}", timeout=15),
        http_request(port, "POST", f"/callback?{forged}", body=b"code=EVIL", timeout=15),
    ]
    return replies, kept


def our_zygotes() -> list[psutil.Process]:
    found = []
    for child in psutil.Process().children():
        try:
            if (
                "runner._child._zygote" in child.cmdline()
                and child.status() != psutil.STATUS_ZOMBIE
            ):
                found.append(child)
        except psutil.Error:
            continue
    return found


def server_pid(registry: Registry, name: str) -> int:
    """The pid of the child serving ``name``'s login of this process, from its lease."""
    records = [r for r in registry.list() if r.owner == f"runner:{name}" and r.pid == os.getpid()]
    assert len(records) == 1, records
    assert records[0].server_pid is not None, records
    return records[0].server_pid


async def one_round(
    runner: Runner,
    sandbox: Sandbox,
    names: dict[str, str],
    round_: int,
    rng: random.Random,
    children: list[int],
) -> tuple[dict[str, FlowResult], str]:
    """One round of logins: wait, attack, kill one child (and the zygote in round 1), go.
    Returns the results and the name of the login whose child was killed; ``children``
    gets the pid of every child that served one of the round's gated logins."""
    own = {name for name in names if name != SHARED}
    go, all_waiting = threading.Event(), anyio.Event()
    loop = anyio.lowlevel.current_token()

    def arrived(listening: frozenset[str]) -> None:
        if own <= listening:
            anyio.from_thread.run_sync(all_waiting.set, token=loop)

    browser = SandboxBrowser(sandbox, gate=go, gate_timeout=WAIT, arrived=arrived)
    registry = runner.registry
    results: dict[str, FlowResult] = {}
    kept: list[socket.socket] = []
    progress = ProgressLog()

    async def login() -> None:
        results.update(
            await runner.authorize_many(
                {name: {"url": sandbox.server(server).url} for name, server in names.items()},
                timeout=LOGIN_TIMEOUT,
                browser=browser,
                pastes=no_pastes(),
                progress=progress,
            )
        )

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(login)
            with anyio.fail_after(WAIT):
                await all_waiting.wait()
            for name in sorted(own):
                port, state = browser.listening[name]
                issuer = sandbox.server(names[name]).issuer
                replies, sockets = await anyio.to_thread.run_sync(hostile, port, state, issuer)
                kept += sockets
                turned_away = [(r.label, r.status) for r in replies if r.status < 400]
                assert turned_away == [], (name, turned_away)
            zygotes = our_zygotes()
            assert len(zygotes) == 1, zygotes
            pids = {name: server_pid(registry, name) for name in sorted(own)}
            assert {psutil.Process(pid).ppid() for pid in pids.values()} == {zygotes[0].pid}
            children += pids.values()
            victim = rng.choice(sorted(own))
            os.kill(pids[victim], signal.SIGKILL)
            if round_ == 1:  # after every child forked: they go on without it
                zygotes[0].kill()
                assert wait_until(lambda: process_gone(zygotes[0].pid), WAIT)
            go.set()
    finally:
        go.set()
        for sock in kept:
            sock.close()
    assert set(results) == set(names), (results, progress.dump())
    unexpected = {n: f for n, f in browser.failures.items() if n != victim}
    assert unexpected == {}, (unexpected, progress.dump())
    return results, victim


@pytest.mark.timeout(150)
@pytest.mark.parametrize("instance", range(3))  # one or more on every worker (-n 2, -n 3)
async def test_logins_share_one_registry_and_store_under_attack(
    tmp_path_factory: pytest.TempPathFactory, instance: int
) -> None:
    leases, tokens = shared_directories(tmp_path_factory)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    prefix = f"{worker}-{instance}-{os.getpid()}"
    rng = random.Random(f"{prefix}")
    store = TokenStore(tokens)
    registry = Registry(leases)
    before = child_processes()
    children: list[int] = []  # every gated login's child, the killed ones among them
    fds_after: list[int] = []
    with Sandbox(servers=SERVERS, browser_timeout=20) as sandbox:
        servers = [server.name for server in sandbox.servers]
        names = {f"{prefix}-{server}": server for server in servers}
        names[SHARED] = servers[0]  # the name every test shares, for a server of its own
        # A record saved under it by a sandbox that has stopped since could name a port
        # that one of ours now has (and so look like ours); one saved from now on is a
        # running sandbox's, whose ports are not ours.
        store.delete(SHARED)
        try:
            async with Runner(store=store, registry=registry, start_method="zygote") as runner:
                await runner.warm_up()
                for round_ in range(1, ROUNDS + 1):
                    for name in names:
                        if name != SHARED:
                            store.delete(name)  # a full login each round
                    results, victim = await one_round(runner, sandbox, names, round_, rng, children)

                    crashed = results[victim]
                    assert isinstance(crashed.error, FlowCrashed), crashed.error
                    failed = {n: r.error for n, r in results.items() if n != victim and not r.ok}
                    assert failed == {}, failed
                    issued = {server: sandbox.issued_tokens(server) for server in servers}
                    for name, result in results.items():
                        if name == victim:
                            continue
                        assert result.tokens is not None
                        token = result.tokens.access_token
                        issuers = [server for server, ts in issued.items() if token in ts]
                        assert issuers == [names[name]], (name, issuers)
                        if name != SHARED:  # another worker may have saved "shared" since
                            stored = store.load(name)
                            assert stored is not None
                            assert stored.tokens.access_token == token, name

                    mine = [r for r in registry.list(stale=True) if r.pid == os.getpid()]
                    assert mine == [], mine
                    # Every child is gone, those of the killed zygote too (no longer ours:
                    # reparented), and nothing but the zygote is left running.
                    assert [p for p in children if not process_gone(p)] == []
                    zygotes = {z.pid for z in our_zygotes()}
                    left = child_processes() - before - zygotes
                    assert [p for p in left if not process_gone(p)] == []
                    # The sandbox closes its side of the children's connections once it sees
                    # them end: bounded poll for the count to settle.
                    fds_after.append(len(open_fds()))
                    if round_ > 1:
                        wait_until(lambda: len(open_fds()) <= fds_after[0], 5.0)
                        fds_after[-1] = len(open_fds())
                assert runner.zygotes_started == 2
            assert still_running(before) == []
        finally:
            kill_all(child_processes() - before)
    assert all(n <= fds_after[0] for n in fds_after[1:]), fds_after
