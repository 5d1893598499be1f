"""Hostile files and failing host callbacks around ``authorize_many`` (issue 6, rows 1, 5, 10).

A FIFO where a token file would be, ``pastes``/``progress``/``browser`` callbacks that raise
or hang, a registry that fails when a lease is released, a channel that fails to close, a
store that cannot load or save. Real sandbox servers, real children. Every test checks that
the results keep ``FlowResult``'s contract (ok exactly when there are tokens), that what
failed was warned about, and that no child, lease or runner thread is left.

Where today's code would block the event loop (so ``anyio.fail_after`` could not fire), a
watchdog thread ends the block late enough that the elapsed-time check fails instead of the
test hanging.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import time
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import pytest

from portlease import Lease, Registry, RegistryError
from runner import FlowResult, ServerSpec, TokenStore
from runner._io._channel import Channel
from runner.errors import FlowTimeout, HostCallbackWarning, LoginCleanupWarning
from runner.events import Event, Finished
from runner.sandbox import Sandbox, list_tools_with_token
from runner.store import StoredLogin, TokenStoreWarning

from support.flows import (
    ProgressLog,
    authorization_response_async,
    authorize_and_look,
    child_processes,
    join_threads,
    process_gone,
    unblock_fifo,
)

pytestmark = pytest.mark.anyio

TIMEOUT = 30.0  # per login: generous, the machine is shared; no test here waits it out
BOUND = 50.0  # per call of authorize_many, under pytest-timeout's 60 s


def assert_contract(results: dict[str, FlowResult]) -> None:
    """ok exactly when there are tokens, and exactly when there is no error."""
    for name, result in results.items():
        assert result.ok == (result.tokens is not None), (name, result)
        assert result.ok == (result.error is None), (name, result.error)


async def assert_all_ok(sb: Sandbox, results: dict[str, FlowResult], log: ProgressLog) -> None:
    assert_contract(results)
    for name, result in results.items():
        assert result.ok, (name, result.error, log.dump())
        assert result.tokens is not None
        assert await list_tools_with_token(sb.server(name).url, result.tokens.access_token)


def assert_nothing_left(leases: Path, left_behind: list[str]) -> None:
    assert left_behind == [], left_behind
    assert Registry(leases).list(stale=True) == []
    # Every runner thread that is not the host's code has ended with the call.
    for prefix in ("runner-progress", "runner-store-", "runner-release-"):
        assert join_threads(prefix, 5.0) == [], prefix


async def login_all(
    sb: Sandbox, tmp_path: Path, *, store: TokenStore | None = None, **kwargs: Any
) -> tuple[dict[str, FlowResult], list[str]]:
    """``authorize_many`` against the sandbox with its consent browser (unless given), a
    fresh store and registry under ``tmp_path``; bounded by ``BOUND``."""
    options: dict[str, Any] = {
        "store": store if store is not None else TokenStore(tmp_path / "tokens"),
        "registry": Registry(tmp_path / "leases"),
        "timeout": TIMEOUT,
        "browser": sb.browser,
    }
    options.update(kwargs)
    before = child_processes()
    with anyio.fail_after(BOUND):
        return await authorize_and_look(before, sb.config(), **options)


def messages_of(caught: Any, category: type[Warning]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, category)]


# --- row 1: a FIFO where a token file would be ------------------------------------------------


async def test_a_fifo_in_place_of_a_token_file_blocks_no_login(tmp_path: Path) -> None:
    timeout = 5.0
    tokens = tmp_path / "tokens"
    tokens.mkdir(mode=0o700)
    store = TokenStore(tokens)
    fifo = store.path_for("sandbox-1")
    os.mkfifo(fifo, 0o600)
    # A load on the event loop blocks it in open() with no way out but a writer: this
    # watchdog is that writer, late enough for the elapsed check below to fail.
    watchdog = threading.Timer(timeout + 10, unblock_fifo, args=(fifo,))
    watchdog.start()
    log = ProgressLog()
    try:
        with Sandbox(servers=2) as sb, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            started = time.monotonic()
            results, left_behind = await login_all(
                sb, tmp_path, store=store, timeout=timeout, progress=log
            )
            elapsed = time.monotonic() - started
            healthy = results["sandbox-2"]
            assert healthy.ok and healthy.tokens is not None, (healthy.error, log.dump())
            assert await list_tools_with_token(
                sb.server("sandbox-2").url, healthy.tokens.access_token
            )
    finally:
        watchdog.cancel()
        watchdog.join(5)
        unblock_fifo(fifo)  # a load still blocked in its (abandoned) thread goes on
    assert_contract(results)
    assert elapsed < timeout + 3, (elapsed, log.dump())
    fifo_result = results["sandbox-1"]
    # The bounded reader refuses the FIFO at once: its login is a fresh one, and ok.
    assert fifo_result.ok, (fifo_result.error, log.dump())
    # Moved aside (kept, unread); the fresh login saved a regular file in its place.
    (aside,) = tokens.glob("sandbox-1.json.corrupt-*")
    assert stat.S_ISFIFO(aside.lstat().st_mode)
    assert stat.S_ISREG(fifo.lstat().st_mode)
    assert messages_of(caught, TokenStoreWarning), [str(w.message) for w in caught]
    unexpected = [str(w.message) for w in caught if not issubclass(w.category, TokenStoreWarning)]
    assert unexpected == [], unexpected
    assert_nothing_left(tmp_path / "leases", left_behind)


class HungStore(TokenStore):
    """A store on a hung file system: loading ``hung`` blocks until ``release`` is set."""

    def __init__(self, directory: Path, hung: str, release: threading.Event) -> None:
        super().__init__(directory)
        self.hung = hung
        self.release = release

    def load(self, name: str) -> StoredLogin | None:
        if name == self.hung:
            self.release.wait(60)
        return super().load(name)


async def test_a_store_read_that_hangs_blocks_only_its_own_login(tmp_path: Path) -> None:
    """Whatever the store does (a hung NFS mount, a FIFO before the bounded reader), the
    read runs off the event loop and within its login's deadline."""
    timeout = 5.0
    release = threading.Event()
    store = HungStore(tmp_path / "tokens", "sandbox-1", release)
    # Today's code loads on the event loop, which this would block until the test ends:
    # the watchdog lets it go late enough for the elapsed check to fail.
    watchdog = threading.Timer(timeout + 10, release.set)
    watchdog.start()
    log = ProgressLog()
    try:
        with Sandbox(servers=2) as sb:
            started = time.monotonic()
            results, left_behind = await login_all(
                sb, tmp_path, store=store, timeout=timeout, progress=log
            )
            elapsed = time.monotonic() - started
            await assert_all_ok(sb, {"sandbox-2": results["sandbox-2"]}, log)
    finally:
        release.set()
        watchdog.cancel()
        watchdog.join(5)
    assert_contract(results)
    assert elapsed < timeout + 3, (elapsed, log.dump())
    hung = results["sandbox-1"]
    assert isinstance(hung.error, FlowTimeout), (hung.error, log.dump())
    assert "reading its stored login did not finish" in str(hung.error)
    assert hung.port is None  # it never got as far as a lease
    assert_nothing_left(tmp_path / "leases", left_behind)


# --- row 5: pastes ------------------------------------------------------------------------


async def test_pastes_that_raise_end_the_pastes_not_the_logins(tmp_path: Path) -> None:
    read: list[str] = []

    async def pastes() -> AsyncIterator[str]:
        read.append("not a callback URL")
        yield "not a callback URL"
        raise RuntimeError("the paste source broke")

    log = ProgressLog()
    with Sandbox(servers=2) as sb:
        with pytest.warns(HostCallbackWarning) as caught:
            results, left_behind = await login_all(sb, tmp_path, pastes=pastes(), progress=log)
        await assert_all_ok(sb, results, log)
    warned = messages_of(caught, HostCallbackWarning)
    assert len(warned) == 1, warned
    assert "pastes raised RuntimeError: the paste source broke" in warned[0]
    assert read == ["not a callback URL"]
    assert_nothing_left(tmp_path / "leases", left_behind)


class HangingPastes:
    """A paste source (not a generator) that never yields and has a resource to close, as a
    terminal reader has (``remove_reader``)."""

    def __init__(self) -> None:
        self.waiting = 0
        self.closed = False

    def __aiter__(self) -> HangingPastes:
        return self

    async def __anext__(self) -> str:
        self.waiting += 1
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        self.closed = True


async def test_pastes_that_hang_are_stopped_and_closed_with_the_logins(tmp_path: Path) -> None:
    """Waiting for a paste that never comes is what a terminal does: no warning; the source
    is closed before the call returns."""
    source = HangingPastes()
    log = ProgressLog()
    with Sandbox(servers=2) as sb, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results, left_behind = await login_all(sb, tmp_path, pastes=source, progress=log)
        await assert_all_ok(sb, results, log)
    assert source.waiting == 1
    assert source.closed
    assert [str(w.message) for w in caught] == []
    assert_nothing_left(tmp_path / "leases", left_behind)


# --- row 5: progress ----------------------------------------------------------------------


async def test_progress_that_always_raises_changes_no_result(tmp_path: Path) -> None:
    log = ProgressLog()

    def progress(event: Event) -> None:
        log(event)
        raise RuntimeError("the host's progress is broken")

    with Sandbox(servers=2) as sb:
        with pytest.warns(HostCallbackWarning) as caught:
            results, left_behind = await login_all(sb, tmp_path, progress=progress)
        await assert_all_ok(sb, results, log)
    warned = messages_of(caught, HostCallbackWarning)
    assert len(warned) == 1, warned  # once per call, not once per sentence
    assert "progress raised RuntimeError: the host's progress is broken" in warned[0]
    for name in results:  # still told of every step, in order, to the end
        messages = log.messages(name)
        assert messages[-1] == "logged in", messages
        assert messages.index("waiting for the login in the browser") < len(messages) - 1
    assert_nothing_left(tmp_path / "leases", left_behind)


async def test_progress_that_raises_on_logged_in_loses_no_saved_login(tmp_path: Path) -> None:
    log = ProgressLog()

    def progress(event: Event) -> None:
        log(event)
        if isinstance(event, Finished):
            raise ValueError(f"cannot show {event.name}")

    store = TokenStore(tmp_path / "tokens")
    with Sandbox(servers=2) as sb:
        with pytest.warns(HostCallbackWarning) as caught:
            results, left_behind = await login_all(sb, tmp_path, store=store, progress=progress)
        await assert_all_ok(sb, results, log)
        for name, result in results.items():
            saved = store.load(name)
            assert saved is not None and result.tokens is not None
            assert saved.tokens.access_token == result.tokens.access_token
    warned = messages_of(caught, HostCallbackWarning)
    assert len(warned) == 1 and "progress raised ValueError: cannot show" in warned[0], warned
    told = [n for _, n, m in log.entries if m == "logged in"]
    assert len(told) == len(results) and set(told) == set(results), told
    assert_nothing_left(tmp_path / "leases", left_behind)


async def test_progress_that_blocks_stalls_no_login(tmp_path: Path) -> None:
    release = threading.Event()
    log = ProgressLog()

    def progress(event: Event) -> None:
        log(event)
        release.wait(60)

    # Today's code calls progress on the event loop, which this would block until the test
    # ends: the watchdog lets it go late enough for the elapsed check to fail.
    watchdog = threading.Timer(25, release.set)
    watchdog.start()
    try:
        with Sandbox(servers=2) as sb:
            started = time.monotonic()
            with pytest.warns(HostCallbackWarning) as caught:
                results, left_behind = await login_all(sb, tmp_path, progress=progress)
            elapsed = time.monotonic() - started
            await assert_all_ok(sb, results, log)
    finally:
        release.set()
        watchdog.cancel()
        watchdog.join(5)
    assert elapsed < 20, elapsed
    warned = messages_of(caught, HostCallbackWarning)
    assert len(warned) == 1 and "progress had not returned" in warned[0], warned
    # The one call that blocked, and nothing after it: the rest was dropped, not delivered
    # after the call returned.
    assert join_threads("runner-progress", 5.0) == []
    assert len(log.entries) == 1, log.dump()
    assert_nothing_left(tmp_path / "leases", left_behind)


# --- row 5: browser -----------------------------------------------------------------------


async def test_a_browser_that_raises_or_hangs_is_contained(tmp_path: Path) -> None:
    """sandbox-1: the browser consents, then raises; sandbox-2: it raises at once (the login
    then completes by a paste); sandbox-3: it consents, then blocks until the test ends."""
    hang = threading.Event()
    urls: dict[str, str] = {}
    url_known = anyio.Event()
    loop = anyio.lowlevel.current_token()

    with Sandbox(servers=3) as sb:

        def browser(url: str, spec: ServerSpec) -> None:
            if spec.name == "sandbox-2":
                urls[spec.name] = url
                anyio.from_thread.run_sync(url_known.set, token=loop)
                raise OSError(errno.ENOENT, "no browser here")
            sb.browser(url, spec)
            if spec.name == "sandbox-1":
                raise RuntimeError("the browser crashed after the consent")
            hang.wait(60)

        async def pastes() -> AsyncIterator[str]:
            await url_known.wait()
            yield await authorization_response_async(urls["sandbox-2"])
            await anyio.sleep_forever()  # then waits, as a terminal does

        log = ProgressLog()
        try:
            with pytest.warns(HostCallbackWarning) as caught:
                results, left_behind = await login_all(
                    sb, tmp_path, browser=browser, pastes=pastes(), progress=log
                )
        finally:
            hang.set()
        await assert_all_ok(sb, results, log)
        assert "callback received (paste); getting tokens" in log.messages("sandbox-2")
    warned = messages_of(caught, HostCallbackWarning)
    assert len(warned) == 2, warned
    assert any(m.startswith("sandbox-1: browser raised RuntimeError") for m in warned), warned
    assert any(m.startswith("sandbox-2: browser raised FileNotFoundError") for m in warned)
    assert join_threads("runner-browser-", 5.0) == []
    assert_nothing_left(tmp_path / "leases", left_behind)


# --- row 10: tidying up after the tokens arrived ------------------------------------------


async def test_a_lease_release_that_fails_after_the_tokens_is_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = Lease.release
    child_gone_at_release: list[bool] = []

    def failing_release(self: Lease) -> None:
        server = self.record.server_pid
        child_gone_at_release.append(server is None or process_gone(server))
        release(self)  # the fault comes after the work, so that nothing real leaks
        raise RegistryError("the registry became unwritable (injected)")

    monkeypatch.setattr(Lease, "release", failing_release)
    log = ProgressLog()
    with Sandbox(servers=2) as sb:
        with pytest.warns(LoginCleanupWarning) as caught:
            results, left_behind = await login_all(sb, tmp_path, progress=log)
        await assert_all_ok(sb, results, log)
    warned = messages_of(caught, LoginCleanupWarning)
    assert len(warned) == 2, warned
    assert all("could not be released" in m and "injected" in m for m in warned), warned
    assert child_gone_at_release == [True, True]  # released only after the child's exit
    assert_nothing_left(tmp_path / "leases", left_behind)


async def test_a_channel_that_fails_to_close_after_the_tokens_is_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    aclose = Channel.aclose

    async def failing_aclose(self: Channel) -> None:
        await aclose(self)
        raise OSError(errno.EIO, "closing failed (injected)")

    monkeypatch.setattr(Channel, "aclose", failing_aclose)
    log = ProgressLog()
    with Sandbox(servers=1) as sb:
        with pytest.warns(LoginCleanupWarning) as caught:
            results, left_behind = await login_all(sb, tmp_path, progress=log)
        await assert_all_ok(sb, results, log)
    warned = messages_of(caught, LoginCleanupWarning)
    assert len(warned) == 1 and "closing its channel failed" in warned[0], warned
    assert_nothing_left(tmp_path / "leases", left_behind)


class UnwritableStore(TokenStore):
    """A store whose disk is full."""

    def save(self, name: str, login: StoredLogin) -> Path:
        raise OSError(errno.ENOSPC, "no space left on device (injected)")


async def test_tokens_that_cannot_be_saved_are_still_returned(tmp_path: Path) -> None:
    store = UnwritableStore(tmp_path / "tokens")
    log = ProgressLog()
    with Sandbox(servers=2) as sb:
        with pytest.warns(TokenStoreWarning) as caught:
            results, left_behind = await login_all(sb, tmp_path, store=store, progress=log)
        await assert_all_ok(sb, results, log)
    warned = messages_of(caught, TokenStoreWarning)
    assert len(warned) == 2, warned
    assert all("tokens were not saved" in m and "injected" in m for m in warned), warned
    for name in results:
        assert TokenStore(tmp_path / "tokens").load(name) is None
    assert_nothing_left(tmp_path / "leases", left_behind)


class UnreadableStore(TokenStore):
    """A store whose reads fail for a reason of the moment."""

    def load(self, name: str) -> StoredLogin | None:
        raise OSError(errno.EIO, "input/output error (injected)")


async def test_a_store_that_cannot_load_means_a_fresh_login(tmp_path: Path) -> None:
    store = UnreadableStore(tmp_path / "tokens")
    log = ProgressLog()
    with Sandbox(servers=2) as sb:
        with pytest.warns(TokenStoreWarning) as caught:
            results, left_behind = await login_all(sb, tmp_path, store=store, progress=log)
        await assert_all_ok(sb, results, log)
        assert all(result.interactive for result in results.values())
        assert sb.browser_calls == 2
    warned = messages_of(caught, TokenStoreWarning)
    assert len(warned) == 2, warned
    assert all("could not be read" in m and "logs in afresh" in m for m in warned), warned
    assert_nothing_left(tmp_path / "leases", left_behind)
