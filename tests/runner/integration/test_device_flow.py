"""Device logins (RFC 8628, ``ServerSpec.flow == "device"``) end to end: real sandbox servers
on 127.0.0.1 with the device grant, real login children, the simulated person approving the
user code when ``DeviceCodeIssued`` arrives. No browser is ever called."""

from __future__ import annotations

import dataclasses
import itertools
import threading
from pathlib import Path
from typing import Any

import pytest

from runner import ServerSpec, TokenStore
from runner.errors import AuthorizationDenied, FlowTimeout, OAuthProtocolError
from runner.events import (
    CallbackReceived,
    DeviceCodeIssued,
    Event,
    Finished,
    Listening,
    LoggingIn,
    Refreshing,
    WaitingForBrowser,
)
from runner.sandbox import Sandbox, list_tools_with_token

from support.flows import ProgressLog
from support.logins import expire, login

pytestmark = pytest.mark.anyio


def refused_browser(url: str, spec: ServerSpec) -> None:
    raise AssertionError(f"a device login opened a browser for {spec.name}")


class Person(ProgressLog):
    """A ``progress`` that keeps every event and, like a person reading the screen, enters
    each user code it is shown at the sandbox (unless ``approve`` is False)."""

    def __init__(self, sandbox: Sandbox, *, approve: bool = True) -> None:
        super().__init__()
        self.sandbox = sandbox
        self.approve = approve
        self.approved: list[bool] = []
        self.done = threading.Event()

    def __call__(self, event: Event) -> None:
        super().__call__(event)
        if isinstance(event, DeviceCodeIssued) and self.approve:
            self.approved.append(self.sandbox.approve_device(event.user_code))


def device_specs(sandbox: Sandbox, **fields: Any) -> list[ServerSpec]:
    return [
        ServerSpec(name=server.name, url=server.url, flow="device", **fields)
        for server in sandbox.servers
    ]


async def test_a_device_login_gets_tokens_that_work_and_then_refreshes(tmp_path: Path) -> None:
    with Sandbox(servers=2, device=True) as sandbox:
        person = Person(sandbox)
        results = await login(
            sandbox, tmp_path, device_specs(sandbox), browser=refused_browser, progress=person
        )
        assert all(r.ok for r in results.values()), results
        assert person.approved == [True, True]
        for server in sandbox.servers:
            result = results[server.name]
            assert result.interactive and result.tokens is not None
            assert result.tokens.access_token in sandbox.issued_tokens(server.name)
            assert await list_tools_with_token(server.url, result.tokens.access_token)
            told = [e for e in person.events if e.name == server.name]
            assert [type(e) for e in told] == [
                LoggingIn,
                Listening,
                DeviceCodeIssued,
                CallbackReceived,
                Finished,
            ], told
            issued = told[2]
            assert isinstance(issued, DeviceCodeIssued)
            assert issued.verification_uri == f"{server.issuer}/device"
            assert issued.verification_uri_complete == (
                f"{server.issuer}/device?user_code={issued.user_code}"
            )
            assert str(issued) == (
                f"open {server.issuer}/device on any device and enter the code {issued.user_code}"
            )
            assert told[3] == CallbackReceived(server.name, "device")
            assert not any(isinstance(e, WaitingForBrowser) for e in told)
            polls = sandbox.device_polls(server.name)
            assert polls[-1][1] == "tokens"
            # Never faster than the server's interval (1 s): the server saw no early poll.
            assert all(answer != "slow_down" for _, answer in polls)

        # The stored login is like any other: granted by its issuer, refreshed in the parent.
        store = TokenStore(tmp_path / "tokens")
        name = sandbox.servers[0].name
        stored = store.load(name)
        assert stored is not None and stored.granted_by == sandbox.servers[0].issuer
        expire(store, name)
        progress = ProgressLog()
        again = await login(
            sandbox, tmp_path, device_specs(sandbox)[:1], browser=refused_browser, progress=progress
        )
        assert again[name].ok and not again[name].interactive
        assert [type(e) for e in progress.events] == [Refreshing, Finished]
        assert again[name].tokens is not None
        assert await list_tools_with_token(sandbox.servers[0].url, again[name].tokens.access_token)


async def test_a_device_login_waits_while_pending_and_slows_down_when_told(
    tmp_path: Path,
) -> None:
    with Sandbox(servers=1, device=True, device_slow_down=1) as sandbox:
        pending: list[str] = []

        class Later(Person):
            # Approve only after the server has answered at least one poll, so that the
            # login sees slow_down and authorization_pending first.
            def __call__(self, event: Event) -> None:
                ProgressLog.__call__(self, event)
                if isinstance(event, DeviceCodeIssued):
                    pending.append(event.user_code)
                    threading.Thread(target=self.approve_after_polls, daemon=True).start()

            def approve_after_polls(self) -> None:
                name = sandbox.servers[0].name
                for _ in range(400):  # bounded: 40 s
                    if len(sandbox.device_polls(name)) >= 2:
                        break
                    self.done.wait(0.1)
                self.approved.append(sandbox.approve_device(pending[0]))

        person = Later(sandbox)
        results = await login(
            sandbox,
            tmp_path,
            device_specs(sandbox),
            browser=refused_browser,
            progress=person,
            timeout=60,
        )
        name = sandbox.servers[0].name
        assert results[name].ok, results[name].error
        polls = sandbox.device_polls(name)
        answers = [answer for _, answer in polls]
        assert answers[0] == "slow_down"
        assert answers[1] == "authorization_pending"
        assert answers[-1] == "tokens"
        # After slow_down the interval was 1 + 5 s: the next poll came no sooner.
        assert polls[1][0] - polls[0][0] >= 6 * 0.9


async def test_a_denied_device_login_is_authorization_denied(tmp_path: Path) -> None:
    with Sandbox(servers=1, device=True, consent="deny") as sandbox:
        person = Person(sandbox)
        results = await login(
            sandbox, tmp_path, device_specs(sandbox), browser=refused_browser, progress=person
        )
        result = results[sandbox.servers[0].name]
        assert not result.ok and isinstance(result.error, AuthorizationDenied), result.error
        assert result.interactive
        assert "access_denied" in str(result.error)
        assert TokenStore(tmp_path / "tokens").load(sandbox.servers[0].name) is None


async def test_an_expired_device_code_is_a_timeout(tmp_path: Path) -> None:
    with Sandbox(servers=1, device=True, device_expires_in=1) as sandbox:
        person = Person(sandbox, approve=False)
        results = await login(
            sandbox, tmp_path, device_specs(sandbox), browser=refused_browser, progress=person
        )
        result = results[sandbox.servers[0].name]
        assert isinstance(result.error, FlowTimeout), result.error
        assert "expired_token" in str(result.error)
        assert [a for _, a in sandbox.device_polls(sandbox.servers[0].name)] == ["expired_token"]


async def test_a_device_login_nobody_approves_ends_at_the_timeout(tmp_path: Path) -> None:
    with Sandbox(servers=1, device=True) as sandbox:
        person = Person(sandbox, approve=False)
        results = await login(
            sandbox,
            tmp_path,
            device_specs(sandbox, timeout=4),
            browser=refused_browser,
            progress=person,
        )
        result = results[sandbox.servers[0].name]
        assert isinstance(result.error, FlowTimeout), result.error
        answers = {a for _, a in sandbox.device_polls(sandbox.servers[0].name)}
        assert answers == {"authorization_pending"}


async def test_a_server_without_the_device_endpoint_says_what_to_do(tmp_path: Path) -> None:
    with Sandbox(servers=1) as sandbox:
        person = Person(sandbox)
        results = await login(
            sandbox, tmp_path, device_specs(sandbox), browser=refused_browser, progress=person
        )
        result = results[sandbox.servers[0].name]
        assert isinstance(result.error, OAuthProtocolError), result.error
        message = str(result.error)
        assert "device_authorization_endpoint" in message and "browser" in message
        assert not any(isinstance(e, DeviceCodeIssued) for e in person.events)


async def test_a_preregistered_confidential_client_logs_in_by_device(tmp_path: Path) -> None:
    client = ("device-client", "device-secret", "client_secret_basic")
    with Sandbox(servers=1, device=True, preregistered=client, registration=False) as sandbox:
        person = Person(sandbox)
        specs = [
            dataclasses.replace(spec, client_id="device-client", client_secret="device-secret")
            for spec in device_specs(sandbox)
        ]
        results = await login(sandbox, tmp_path, specs, browser=refused_browser, progress=person)
        result = results[sandbox.servers[0].name]
        assert result.ok, result.error
        assert result.tokens is not None
        assert await list_tools_with_token(sandbox.servers[0].url, result.tokens.access_token)


async def test_the_device_code_is_never_shown(tmp_path: Path) -> None:
    with Sandbox(servers=1, device=True) as sandbox:
        person = Person(sandbox)
        results = await login(
            sandbox, tmp_path, device_specs(sandbox), browser=refused_browser, progress=person
        )
        name = sandbox.servers[0].name
        [device_code] = sandbox.issued_device_codes(name)
        shown = [str(e) for e in person.events] + [repr(e) for e in person.events]
        shown += [repr(results), str(results[name].error)]
        shown += [p.read_text() for p in (tmp_path / "tokens").iterdir() if p.is_file()]
        assert results[name].ok
        assert not any(device_code in text for text in shown)


async def test_a_server_asking_for_no_interval_is_still_polled_at_most_once_a_second(
    tmp_path: Path,
) -> None:
    with Sandbox(servers=1, device=True, device_interval=0) as sandbox:
        name = sandbox.servers[0].name
        codes: list[str] = []

        class AfterThreePolls(Person):
            def __call__(self, event: Event) -> None:
                ProgressLog.__call__(self, event)
                if isinstance(event, DeviceCodeIssued):
                    codes.append(event.user_code)
                    threading.Thread(target=self.approve_later, daemon=True).start()

            def approve_later(self) -> None:
                for _ in range(300):  # bounded: 30 s
                    if len(sandbox.device_polls(name)) >= 3:
                        break
                    self.done.wait(0.1)
                self.approved.append(sandbox.approve_device(codes[0]))

        results = await login(
            sandbox,
            tmp_path,
            device_specs(sandbox),
            browser=refused_browser,
            progress=AfterThreePolls(sandbox),
        )
        assert results[name].ok, results[name].error
        times = [t for t, _ in sandbox.device_polls(name)]
        assert len(times) >= 4
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        assert min(gaps) >= 0.9, gaps  # the 1 s floor (less a timer's slack)
