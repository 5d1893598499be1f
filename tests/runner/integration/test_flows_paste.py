"""Pasted callback URLs are routed to the login whose state they carry.

Three real logins wait for a consent their browser never completes; the test performs each
authorization request itself (without following the redirect to the listener) and pastes
the resulting callback URLs, mixed with junk, through ``authorize_many(pastes=...)``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode, urlsplit, urlunsplit

import anyio
import anyio.from_thread
import anyio.lowlevel
import pytest

from portlease import Registry
from runner import ServerSpec, TokenStore
from runner.errors import NeedsInteraction
from runner.sandbox import Sandbox, TokenRejected, list_tools_with_token

from support.flows import (
    ProgressLog,
    authorization_response_async,
    authorize_and_look,
    callback_target,
    child_processes,
    query_params,
)

pytestmark = pytest.mark.anyio

NAMES = ("sandbox-1", "sandbox-2", "sandbox-3")


def with_state(url: str, state: str) -> str:
    parts = urlsplit(url)
    params = query_params(url)
    params["state"] = state
    return urlunsplit(parts._replace(query=urlencode(params)))


async def test_pastes_are_routed_by_state(tmp_path: Path) -> None:
    auth_urls: dict[str, str] = {}
    lock = threading.Lock()
    all_known = anyio.Event()
    loop = anyio.lowlevel.current_token()
    pasted: list[str] = []
    before = child_processes()

    def recording_browser(url: str, spec: ServerSpec) -> None:
        with lock:
            auth_urls[spec.name] = url
            complete = len(auth_urls) == len(NAMES)
        if complete:
            # The browser runs in a plain daemon thread: reach the loop by its token.
            anyio.from_thread.run_sync(all_known.set, token=loop)

    async def pastes() -> AsyncIterator[str]:
        with anyio.fail_after(30):
            await all_known.wait()
        callbacks = {name: await authorization_response_async(auth_urls[name]) for name in NAMES}
        for name in NAMES:  # each callback goes to its own login's listener
            assert callbacks[name].startswith(callback_target(auth_urls[name]).redirect_uri)
        lines = [
            "garbage",
            "",
            with_state(callbacks["sandbox-1"], "not-a-state-of-any-login"),
            urlsplit(callbacks["sandbox-2"]).query,
            f'  "{callbacks["sandbox-1"]}"  \t',
            callbacks["sandbox-3"],
        ]
        for line in lines:
            pasted.append(line)
            yield line

    with Sandbox(servers=3) as sb:
        progress = ProgressLog()
        store = TokenStore(tmp_path / "tokens")
        registry = Registry(tmp_path / "leases")
        started = time.monotonic()
        results, left_behind = await authorize_and_look(
            before,
            sb.config(),
            store=store,
            registry=registry,
            timeout=40,
            browser=recording_browser,
            pastes=pastes(),
            progress=progress,
        )
        elapsed = time.monotonic() - started

        assert len(pasted) == 6, pasted  # every paste was read
        assert sb.browser_calls == 0
        for name in NAMES:
            result = results[name]
            assert result.ok, (name, result.error, progress.dump())
            assert result.interactive
            assert result.tokens is not None
            messages = progress.messages(name)
            assert "callback received (paste); getting tokens" in messages, messages
        assert elapsed < 30, elapsed

        # Each token works against its own server and is refused by the others.
        for name in NAMES:
            token = results[name].tokens.access_token  # type: ignore[union-attr]
            assert token in sb.issued_tokens(name)
            assert await list_tools_with_token(sb.server(name).url, token) == ["whoami"]
            other = NAMES[(NAMES.index(name) + 1) % len(NAMES)]
            with pytest.raises(TokenRejected) as rejected:
                await list_tools_with_token(sb.server(other).url, token)
            assert rejected.value.status == 401
            stored = store.load(name)
            assert stored is not None and stored.tokens.access_token == token

        # The person was told about the garbage and the wrong state; the blank line is silent.
        told = progress.messages(None)
        assert len(told) == 2, told
        garbage, wrong_state = told
        assert "callback" in garbage and "paste" in garbage, garbage
        assert "no login" in wrong_state, wrong_state
        for message in told:
            for name in NAMES:  # no state, query or code is echoed back
                assert query_params(auth_urls[name])["state"] not in message
    assert registry.list(stale=True) == []
    assert left_behind == [], left_behind


async def test_non_interactive_fails_fast_without_a_browser(tmp_path: Path) -> None:
    browsed: list[str] = []
    before = child_processes()

    async def no_pastes() -> AsyncIterator[str]:
        await anyio.sleep_forever()
        yield ""  # pragma: no cover - never reached

    with Sandbox(servers=3) as sb:
        registry = Registry(tmp_path / "leases")
        store = TokenStore(tmp_path / "tokens")
        progress = ProgressLog()
        started = time.monotonic()
        results, left_behind = await authorize_and_look(
            before,
            sb.config(),
            store=store,
            registry=registry,
            timeout=30,
            browser=lambda url, spec: browsed.append(url),
            pastes=no_pastes(),
            interactive=False,
            progress=progress,
        )
        elapsed = time.monotonic() - started
        assert sb.browser_calls == 0
        assert sb.issued_tokens("sandbox-1") == set()
    assert browsed == []
    assert list(results) == list(NAMES)
    for name in NAMES:
        result = results[name]
        assert isinstance(result.error, NeedsInteraction), (name, result.error)
        assert not result.ok and result.tokens is None
        assert not result.interactive
        assert result.elapsed < 10, result.elapsed
        assert store.load(name) is None
    assert elapsed < 10, elapsed  # at once, not after the 30 s timeout
    assert registry.list(stale=True) == []
    assert left_behind == [], left_behind
