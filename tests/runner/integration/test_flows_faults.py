"""Faults around ``authorize_many``: a dead child, a hung server, a dead parent, cancellation,
Ctrl-C, a corrupt token file, and the flow timeout. Real children, real sandbox servers."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import anyio.from_thread
import anyio.lowlevel
import psutil
import pytest

from portlease import Registry
from runner import ServerSpec, TokenStore, authorize_many
from runner.errors import FlowCrashed, FlowTimeout
from runner.events import Event, Listening
from runner.sandbox import Sandbox, list_tools_with_token
from runner.store import TokenStoreWarning

from support.flows import (
    ProgressLog,
    authorize_and_look,
    callback_target,
    child_processes,
    descendants,
    kill_all,
    lease_for_port,
    open_fds,
    process_gone,
    still_running,
    wait_for_server_pid,
    wait_processes_gone,
)
from support.parents import start_parent
from support.waiting import wait_until

pytestmark = pytest.mark.anyio


# Both ways a login's child can start: forked from the pre-loaded zygote (the default on
# Linux) and a fresh interpreter per login.
START_METHODS = pytest.mark.parametrize("start_method", ["zygote", "spawn"])


# --- (a) a child killed mid-flow ---------------------------------------------------------------


@START_METHODS
async def test_a_killed_child_fails_its_login_only(tmp_path: Path, start_method: str) -> None:
    leases = tmp_path / "leases"
    killed: list[int] = []
    failures: list[BaseException] = []
    before = child_processes()
    with Sandbox(servers=2) as sb:

        def browser(url: str, spec: ServerSpec) -> int | None:
            if spec.name != "sandbox-1":
                return sb.browser(url, spec)
            try:
                pid = wait_for_server_pid(leases, callback_target(url).port)
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except BaseException as exc:
                failures.append(exc)
            return None  # and no consent

        progress = ProgressLog()
        started = time.monotonic()
        results, left_behind = await authorize_and_look(
            before,
            sb.config(),
            store=TokenStore(tmp_path / "tokens"),
            registry=Registry(leases),
            timeout=30,
            browser=browser,
            progress=progress,
            start_method=start_method,  # type: ignore[arg-type]
        )
        elapsed = time.monotonic() - started

        assert not failures, failures
        crashed, ok = results["sandbox-1"], results["sandbox-2"]
        assert isinstance(crashed.error, FlowCrashed), (crashed.error, progress.dump())
        assert not crashed.ok and crashed.tokens is None
        assert ok.ok, (ok.error, progress.dump())
        assert ok.tokens is not None
        assert await list_tools_with_token(sb.server("sandbox-2").url, ok.tokens.access_token)
        assert elapsed < 15, elapsed  # the crash is noticed, not waited out (timeout=30)
    assert len(killed) == 1
    assert process_gone(killed[0])
    assert Registry(leases).list(stale=True) == []
    assert left_behind == [], left_behind


# --- (b) a hung authorization server -----------------------------------------------------------


async def test_a_hung_token_endpoint_times_out(tmp_path: Path) -> None:
    leases = tmp_path / "leases"
    children: list[int] = []
    before = child_processes()
    with Sandbox(servers=1, hang=True) as sb:

        def browser(url: str, spec: ServerSpec) -> int:
            children.append(wait_for_server_pid(leases, callback_target(url).port))
            return sb.browser(url, spec)  # the callback is accepted; the exchange hangs

        progress = ProgressLog()
        started = time.monotonic()
        results, left_behind = await authorize_and_look(
            before,
            sb.config(),
            store=TokenStore(tmp_path / "tokens"),
            registry=Registry(leases),
            timeout=3,
            browser=browser,
            progress=progress,
        )
        elapsed = time.monotonic() - started

    (result,) = results.values()
    assert isinstance(result.error, FlowTimeout), (result.error, progress.dump())
    assert any(m.startswith("callback received") for m in progress.messages(result.name))
    # The child's own deadline comes 0.25 s before the parent's (runner._parent._supervisor), so the
    # outcome may be reported a little before 3 s; never much earlier, never late.
    assert 2.5 <= result.elapsed <= 4.5, result.elapsed
    assert elapsed <= 4.5, elapsed
    assert len(children) == 1 and process_gone(children[0])
    assert Registry(leases).list(stale=True) == []
    assert left_behind == [], left_behind


# --- (c) the parent killed with SIGKILL --------------------------------------------------------


@pytest.mark.timeout(90)
@START_METHODS
def test_children_exit_when_the_parent_is_killed(tmp_path: Path, start_method: str) -> None:
    leases = tmp_path / "leases"
    spawned: set[int] = set()  # the parent's descendants: login children (and a zygote)
    login_children: list[int] = []
    with Sandbox(servers=2) as sb:
        parent = start_parent(
            tmp_path, sb.config(), mode="async", browser="return", start_method=start_method
        )
        try:
            lines = parent.expect_lines("BROWSER ", 2, timeout=30)
            ports = {int(line.split()[2]) for line in lines}
            assert len(ports) == 2
            for port in ports:
                record = lease_for_port(leases, port)
                assert record is not None and record.server_pid is not None, record
                assert record.pid == parent.proc.pid
                login_children.append(record.server_pid)
            spawned = descendants(parent.proc.pid)
            assert set(login_children) <= spawned
            expected = 2 if start_method == "spawn" else 3  # the zygote is one more
            assert len(spawned) == expected, [psutil.Process(p).cmdline() for p in spawned]
            parent.proc.send_signal(signal.SIGKILL)
            assert parent.proc.wait(timeout=5) == -signal.SIGKILL
            killed_at = time.monotonic()
            left = wait_processes_gone(spawned, 1.5)
            gone_after = time.monotonic() - killed_at
            assert left == [], f"processes {left} outlived their parent by {gone_after:.1f} s"
        finally:
            parent.close()
            kill_all(spawned)
        assert sb.browser_calls == 0
    registry = Registry(leases)
    assert registry.list() == []
    stale = registry.list(stale=True)
    assert {r.port for r in stale} == ports, stale
    assert {r.server_pid for r in stale} == set(login_children)


# --- (d) cancellation --------------------------------------------------------------------------


@START_METHODS
async def test_cancelling_the_call_stops_children_and_releases_everything(
    tmp_path: Path, start_method: str
) -> None:
    leases = tmp_path / "leases"
    registry = Registry(leases)
    release_browsers = threading.Event()
    all_called = anyio.Event()
    loop = anyio.lowlevel.current_token()
    calls: list[str] = []
    lock = threading.Lock()
    before = child_processes()

    def browser(url: str, spec: ServerSpec) -> None:
        with lock:
            calls.append(spec.name)
            done = len(calls) == 2
        if done:
            # The browser runs in a plain daemon thread: reach the loop by its token.
            anyio.from_thread.run_sync(all_called.set, token=loop)
        release_browsers.wait(30)  # a browser that never completes the consent

    with Sandbox(servers=2) as sb:
        # Warm up what stays open for the life of the process (anyio's worker threads,
        # the event loop's descriptors) with a login that completes.
        warm = await authorize_many(
            {"sandbox-1": sb.config()["sandbox-1"]},
            store=TokenStore(tmp_path / "warm-tokens"),
            registry=Registry(tmp_path / "warm-leases"),
            timeout=20,
            browser=sb.browser,
            progress=ProgressLog(),
            start_method=start_method,  # type: ignore[arg-type]
        )
        assert warm["sandbox-1"].ok, warm["sandbox-1"].error
        assert still_running(before) == []
        fds_before = open_fds()

        finished: list[object] = []
        pids: list[int] = []
        spawned: set[int] = set()
        try:
            with anyio.CancelScope() as scope:

                async def run() -> None:
                    finished.append(
                        await authorize_many(
                            sb.config(),
                            store=TokenStore(tmp_path / "tokens"),
                            registry=registry,
                            timeout=30,
                            browser=browser,
                            progress=ProgressLog(),
                            start_method=start_method,  # type: ignore[arg-type]
                        )
                    )

                async with anyio.create_task_group() as tg:
                    tg.start_soon(run)
                    with anyio.fail_after(20):
                        await all_called.wait()
                    records = registry.list()
                    assert len(records) == 2, records
                    pids = [r.server_pid for r in records if r.server_pid is not None]
                    assert len(pids) == 2, records
                    spawned = child_processes() - before  # login children and a zygote
                    assert set(pids) <= spawned
                    assert all(not process_gone(pid) for pid in pids)
                    scope.cancel()
            assert scope.cancelled_caught
            assert finished == []  # it was cancelled, it did not return
            # On exit from the cancelled call everything is already stopped: no polling.
            assert [pid for pid in spawned if not process_gone(pid)] == []
            assert registry.list(stale=True) == []
            assert child_processes() - before == set()
        finally:
            release_browsers.set()
            kill_all(child_processes() - before)

        # The sandbox closes its side of the children's connections when it sees their
        # end of stream: poll (bounded) for the count to come back.
        def leaked() -> dict[int, str]:
            now = open_fds()
            return {fd: target for fd, target in now.items() if fds_before.get(fd) != target}

        wait_until(lambda: not leaked(), 3.0)
        assert leaked() == {}, f"descriptors left open: {leaked()}"


# --- (e) Ctrl-C --------------------------------------------------------------------------------


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("browser", "start_method"),
    [
        ("return", "zygote"),
        ("return", "spawn"),
        # A browser callable still running when Ctrl-C comes (webbrowser.open blocks until a
        # console browser such as w3m or lynx exits; a host's own opener may block too).
        ("block", "zygote"),
    ],
)
def test_ctrl_c_stops_the_parent_and_its_children(
    tmp_path: Path, browser: str, start_method: str
) -> None:
    leases = tmp_path / "leases"
    spawned: set[int] = set()
    with Sandbox(servers=2) as sb:
        # Its own process group, as a terminal's foreground job.
        parent = start_parent(
            tmp_path,
            sb.config(),
            mode="sync",
            browser=browser,
            start_method=start_method,
            new_session=True,
        )
        try:
            lines = parent.expect_lines("BROWSER ", 2, timeout=30)
            login_children = [wait_for_server_pid(leases, int(line.split()[2])) for line in lines]
            spawned = descendants(parent.proc.pid)
            assert set(login_children) <= spawned
            assert os.getpgid(parent.proc.pid) == parent.proc.pid
            os.killpg(parent.proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
            interrupted_at = time.monotonic()
            # Children (and a zygote) are stopped, and the leases released, promptly.
            left = wait_processes_gone(spawned, 5.0)
            children_gone_after = time.monotonic() - interrupted_at
            try:
                code: int | None = parent.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                code = None
            took = time.monotonic() - interrupted_at
        finally:
            parent.close()
            kill_all(spawned)
        assert left == [], f"processes {left} still run {children_gone_after:.1f} s after SIGINT"
        assert Registry(leases).list() == []
        assert code is not None, (
            f"the parent did not exit within {took:.1f} s of SIGINT (its children were gone "
            f"after {children_gone_after:.1f} s); stderr:\n{parent.stderr[-2000:]}"
        )
        assert code != 0, parent.stderr
        assert "KeyboardInterrupt" in parent.stderr, parent.stderr[-3000:]
        assert took < 5, took
        assert sb.browser_calls == 0
    assert Registry(leases).list(stale=True) == []


# --- (f) a corrupt token file ------------------------------------------------------------------


async def test_a_corrupt_token_file_is_kept_aside_and_the_login_is_fresh(
    tmp_path: Path,
) -> None:
    tokens = tmp_path / "tokens"
    tokens.mkdir(mode=0o700)
    bad = {
        "sandbox-1": b'{"tokens": 5}',
        "sandbox-2": b"\x00\xffgarbage{{{",
    }
    for name, content in bad.items():
        (tokens / f"{name}.json").write_bytes(content)
    before = child_processes()
    with Sandbox(servers=2) as sb:
        store = TokenStore(tokens)
        progress = ProgressLog()
        try:
            with pytest.warns(TokenStoreWarning) as caught:
                results = await authorize_many(
                    sb.config(),
                    store=store,
                    registry=Registry(tmp_path / "leases"),
                    timeout=30,
                    browser=sb.browser,
                    progress=progress,
                )
            left_behind = still_running(before)
        finally:
            kill_all(child_processes() - before)
        warned = [w for w in caught if issubclass(w.category, TokenStoreWarning)]
        assert len(warned) == 2, [str(w.message) for w in caught]
        for name, content in bad.items():
            result = results[name]
            assert result.ok, (result.error, progress.dump())
            assert result.interactive  # a fresh login in the browser
            assert result.tokens is not None
            assert await list_tools_with_token(sb.server(name).url, result.tokens.access_token)
            aside = sorted(tokens.glob(f"{name}.json.corrupt-*"))
            assert len(aside) == 1, aside
            assert aside[0].read_bytes() == content  # kept as it was
            assert any(str(aside[0]) in str(w.message) for w in warned)
            loaded = store.load(name)  # the new file is valid
            assert loaded is not None
            assert loaded.tokens.access_token == result.tokens.access_token
    assert Registry(tmp_path / "leases").list(stale=True) == []
    assert left_behind == [], left_behind


# --- (g) the timeout is respected --------------------------------------------------------------


class ChildNotingProgress(ProgressLog):
    """A progress log that also notes each child's pid once its listener is up."""

    def __init__(self, leases: Path) -> None:
        super().__init__()
        self.leases = leases
        self.children: list[int] = []

    def __call__(self, event: Event) -> None:
        super().__call__(event)
        if isinstance(event, Listening):
            port = urlsplit(event.url).port
            record = None if port is None else lease_for_port(self.leases, port)
            if record is not None and record.server_pid is not None:
                self.children.append(record.server_pid)


async def test_the_timeout_is_respected(tmp_path: Path) -> None:
    """timeout=2 covers the whole login, child start-up included (which alone can take most
    of 2 s on a loaded machine, so the browser may or may not be reached)."""
    leases = tmp_path / "leases"
    browsed: list[str] = []
    progress = ChildNotingProgress(leases)
    before = child_processes()
    with Sandbox(servers=1) as sb:
        started = time.monotonic()
        results, left_behind = await authorize_and_look(
            before,
            sb.config(),
            store=TokenStore(tmp_path / "tokens"),
            registry=Registry(leases),
            timeout=2,
            browser=lambda url, spec: browsed.append(url),  # never completes the consent
            progress=progress,
        )
        elapsed = time.monotonic() - started
        assert sb.browser_calls == 0
    (result,) = results.values()
    assert isinstance(result.error, FlowTimeout), (result.error, progress.dump())
    assert isinstance(result.error, TimeoutError)
    assert result.elapsed < 3.5, result.elapsed
    assert elapsed < 3.5, elapsed
    assert all(process_gone(pid) for pid in progress.children)
    assert Registry(leases).list(stale=True) == []
    assert left_behind == [], left_behind


async def test_a_login_waiting_in_the_browser_times_out_on_time(tmp_path: Path) -> None:
    """The same with time to reach the browser: the login waits for a consent that never
    comes and ends with FlowTimeout close to its timeout."""
    leases = tmp_path / "leases"
    children: list[int] = []
    browsed = threading.Event()
    before = child_processes()

    def browser(url: str, spec: ServerSpec) -> None:
        children.append(wait_for_server_pid(leases, callback_target(url).port))
        browsed.set()

    with Sandbox(servers=1) as sb:
        progress = ProgressLog()
        started = time.monotonic()
        results, left_behind = await authorize_and_look(
            before,
            sb.config(),
            store=TokenStore(tmp_path / "tokens"),
            registry=Registry(leases),
            timeout=8,
            browser=browser,
            progress=progress,
        )
        elapsed = time.monotonic() - started
    (result,) = results.values()
    assert browsed.is_set(), progress.dump()
    assert isinstance(result.error, FlowTimeout), (result.error, progress.dump())
    assert result.interactive
    assert 7.5 <= result.elapsed < 9.5, result.elapsed
    assert elapsed < 9.5, elapsed
    assert len(children) == 1 and process_gone(children[0])
    assert Registry(leases).list(stale=True) == []
    assert left_behind == [], left_behind


async def test_a_timeout_names_the_configured_limit(tmp_path: Path) -> None:
    """The FlowTimeout a person reads names the timeout they configured, not the time the
    child had left once it had started (which is what runner._child._login reports)."""
    with Sandbox(servers=1) as sb:
        results = await authorize_many(
            sb.config(),
            store=TokenStore(tmp_path / "tokens"),
            registry=Registry(tmp_path / "leases"),
            timeout=3,
            browser=lambda url, spec: None,  # never completes the consent
            progress=ProgressLog(),
        )
    (result,) = results.values()
    assert isinstance(result.error, FlowTimeout), result.error
    assert "within 3 s" in str(result.error), str(result.error)


# --- (h) the zygote killed while logins wait ---------------------------------------------------


async def test_logins_survive_the_zygote_being_killed(tmp_path: Path) -> None:
    """The zygote only starts children: once they run, its death must not end a login, and
    the children (now orphans) must still be stopped when the call returns."""
    leases = tmp_path / "leases"
    before = child_processes()
    both_waiting = threading.Barrier(2, timeout=20)
    killed: list[int] = []
    login_children: list[int] = []
    failures: list[BaseException] = []

    with Sandbox(servers=2) as sb:

        def browser(url: str, spec: ServerSpec) -> int:
            try:
                login_children.append(wait_for_server_pid(leases, callback_target(url).port))
                if both_waiting.wait() == 0:  # one of the two kills the zygote
                    # Its forked children share its command line: the zygote is the one
                    # that is our own child.
                    zygotes = [
                        proc
                        for proc in psutil.Process().children(recursive=False)
                        if proc.pid not in before and "runner._child._zygote" in proc.cmdline()
                    ]
                    assert len(zygotes) == 1, zygotes
                    zygotes[0].kill()
                    killed.append(zygotes[0].pid)
                    assert wait_until(lambda: process_gone(zygotes[0].pid), 2.0)
                both_waiting.wait()  # the zygote is gone before either login goes on
            except BaseException as exc:
                failures.append(exc)
            return sb.browser(url, spec)

        progress = ProgressLog()
        try:
            results, left_behind = await authorize_and_look(
                before,
                sb.config(),
                store=TokenStore(tmp_path / "tokens"),
                registry=Registry(leases),
                timeout=30,
                browser=browser,
                progress=progress,
                start_method="zygote",
            )
        finally:
            kill_all(login_children)

        assert not failures, failures
        assert len(killed) == 1
        for name, result in results.items():
            assert result.ok, (name, result.error, progress.dump())
            assert result.tokens is not None
            assert await list_tools_with_token(sb.server(name).url, result.tokens.access_token)
    assert len(login_children) == 2
    assert [pid for pid in login_children if not process_gone(pid)] == []
    assert Registry(leases).list(stale=True) == []
    assert left_behind == [], left_behind
