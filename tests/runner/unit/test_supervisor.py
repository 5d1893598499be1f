"""The supervisor run whole with no child process, no registry file and no network.

Like httpx's ``MockTransport``: an in-memory launcher starts a scripted fake child, a task
that speaks ``runner._core._messages`` over the real socket pair and ``Channel`` the supervisor
creates; a fake registry hands out leases that record what is done to them. Every fake
writes into one ``events`` list, so the order of what the supervisor does (hand over,
close the listener copy, stop the child, wait for its exit, release) is asserted as such.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import pytest
from mcp.shared.auth import OAuthMetadata

from portlease import PortBusy
from runner._core import _messages as m
from runner._core._challenge import Challenge
from runner._core._renewal import LoginRequest
from runner._core._spec import FlowResult, ServerSpec
from runner._core._stored import STORE_VERSION, StoredLogin
from runner._io._channel import Channel
from runner._parent._launch import ChildProcess, StartMethod
from runner._parent._notices import Notices
from runner._parent._supervisor import Discoverer, PortLease, Refresher, Supervisor
from runner.errors import (
    AuthorizationDenied,
    CallbackPortBusy,
    FlowCrashed,
    FlowTimeout,
    LoginLockUnavailable,
    NeedsInteraction,
    RefreshFailed,
    RefreshRefused,
)
from runner.store import TokenStoreError

pytestmark = pytest.mark.anyio


SERVER_URL = "http://127.0.0.1:1/mcp"
ISSUER = "http://127.0.0.1:1"
NOW = 1_800_000_000.0
LOGIN_RECORD = {
    "version": STORE_VERSION,
    "server_url": SERVER_URL,
    "tokens": {"access_token": "tok-1", "token_type": "Bearer"},
}
AUTH_URL = "https://as.test/authorize?state=st-1"
METADATA = {
    "issuer": ISSUER,
    "authorization_endpoint": f"{ISSUER}/authorize",
    "token_endpoint": f"{ISSUER}/token",
}


def stored_login(
    *,
    access: str = "old-at",
    refresh: str | None = "old-rt",
    expires_at: float | None = NOW - 10,
    metadata: bool = True,
    granted_by: str | None = None,
) -> StoredLogin:
    """A login the store holds: expired, refreshable, by default."""
    tokens: dict[str, Any] = {"access_token": access, "token_type": "Bearer"}
    if refresh is not None:
        tokens["refresh_token"] = refresh
    return StoredLogin.from_dict(
        {
            "version": STORE_VERSION,
            "server_url": SERVER_URL,
            "tokens": tokens,
            "expires_at": expires_at,
            "client_info": {
                "client_id": "cid",
                "redirect_uris": ["http://127.0.0.1:6000/callback"],
            },
            "oauth_metadata": METADATA if metadata else None,
            "granted_by": granted_by,
        }
    )


async def no_network_refresher(login: StoredLogin, timeout: float) -> StoredLogin:
    raise AssertionError("this test refreshes nothing")


async def no_network_discoverer(url: str, timeout: float, hint: str | None) -> OAuthMetadata | None:
    raise AssertionError("this test looks nothing up")


def a_person_logs_in(port: int = 41000, record: dict[str, Any] = LOGIN_RECORD) -> list[Any]:
    """What a child says for a login a person completes in the browser."""
    return [
        m.ServerReady(port=port),
        m.AuthorizationStarted(url=AUTH_URL, state="st-1"),
        m.CallbackAccepted(source="http"),
        m.TokensIssued(record, True),
    ]


# --- the fakes ---------------------------------------------------------------------------


class FakeLease:
    """A lease with a real (unbound) socket, recording what the supervisor does to it."""

    def __init__(self, port: int, events: list[tuple[Any, ...]]) -> None:
        self._port = port
        self._events = events
        self._socket: socket.socket | None = socket.socket()

    @property
    def port(self) -> int:
        return self._port

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def socket(self) -> socket.socket:
        assert self._socket is not None, "the socket was used after close_socket()"
        return self._socket

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self._port}{path}"

    def hand_over(self, pid: int) -> None:
        self._events.append(("hand_over", pid))

    def close_socket(self) -> None:
        self._events.append(("close_socket",))
        self._drop_socket()

    def release(self) -> None:
        self._events.append(("release", self._port))
        self._drop_socket()

    def _drop_socket(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


class FakeRegistry:
    """Hands out leases; ``busy`` ports raise ``PortBusy`` as a foreign holder would."""

    def __init__(self, events: list[tuple[Any, ...]], busy: frozenset[int] = frozenset()):
        self._events = events
        self._busy = busy
        self._ports = itertools.count(41000)

    def acquire(
        self,
        owner: str,
        *,
        port: int | Collection[int] = 0,
        host: str = "127.0.0.1",
        wait: float = 0.0,
        meta: Mapping[str, str] | None = None,
    ) -> PortLease:
        self._events.append(("acquire", port, wait))
        if not isinstance(port, int):  # a set: the first that is free
            free = sorted(set(port) - self._busy)
            if not free:
                raise PortBusy(min(port), 4242, "squatter", host=host)
            return FakeLease(free[0], self._events)
        if port in self._busy:
            raise PortBusy(port, 4242, "squatter", host=host)
        return FakeLease(port or next(self._ports), self._events)


class FakeStore:
    """An in-memory token store; ``unlockable`` makes its login lock fail to open, as a
    directory in the lock file's place does."""

    def __init__(
        self, stored: dict[str, StoredLogin] | None = None, *, unlockable: bool = False
    ) -> None:
        self.stored = dict(stored or {})
        self.saved: dict[str, StoredLogin] = {}
        self.unlockable = unlockable
        self.cimd_off: set[str] = set()

    def load(self, name: str) -> StoredLogin | None:
        return self.stored.get(name)

    def save(self, name: str, login: StoredLogin) -> object:
        self.saved[name] = login
        return None

    def hold(self, name: str, timeout: float) -> contextlib.AbstractContextManager[None]:
        if self.unlockable:
            raise TokenStoreError(f"/store/{name}.lock", f"cannot lock /store/{name}.lock")
        return contextlib.nullcontext()

    def cimd_refused(self, name: str) -> bool:
        return name in self.cimd_off

    def mark_cimd_refused(self, name: str) -> None:
        self.cimd_off.add(name)


@dataclass(frozen=True)
class Junk:
    """A raw line that is no message."""

    line: bytes


@dataclass(frozen=True)
class Await:
    """Wait for the test (the fake browser, say) before going on."""

    event: anyio.Event


@dataclass(frozen=True)
class ExpectPaste:
    """Wait for a ``DeliverCallback`` and keep its query."""


@dataclass(frozen=True)
class Exit:
    """Close the channel and exit with ``code``."""

    code: int = 0


@dataclass(frozen=True)
class UntilShutdown:
    """Serve until ``Shutdown`` (exit 0) or, if ``ignore``, until a signal."""

    ignore: bool = False


Step = m.Message | Junk | Await | ExpectPaste
Ending = Exit | UntilShutdown


@dataclass(frozen=True)
class Script:
    says: Sequence[Step]
    then: Ending = field(default_factory=Exit)


class ScriptedChild:
    """A fake ``ChildProcess``: a task of the test, speaking over its end of the pair."""

    def __init__(self, pid: int, scripts: Mapping[str, Script], events: list[tuple[Any, ...]]):
        self._pid = pid
        self._scripts = scripts
        self._events = events
        self._returncode: int | None = None
        self._exited = anyio.Event()
        self._scope = anyio.CancelScope()
        self.start: m.StartLogin | None = None
        self.pastes: list[str] = []

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def returncode(self) -> int | None:
        return self._returncode

    @property
    def stderr(self) -> anyio.abc.ByteReceiveStream | None:
        return None

    async def wait(self) -> int:
        await self._exited.wait()
        assert self._returncode is not None
        return self._returncode

    def terminate(self) -> None:
        self._events.append(("signal", "SIGTERM"))
        self._exit(-15)

    def kill(self) -> None:
        self._events.append(("signal", "SIGKILL"))
        self._exit(-9)

    def _exit(self, code: int) -> None:
        if self._returncode is None:
            self._returncode = code
            self._events.append(("exit", code))
            self._scope.cancel()
            self._exited.set()

    async def run(self, sock: socket.socket) -> None:
        stream = await anyio.abc.SocketStream.from_socket(sock)
        channel = Channel(stream)
        try:
            with self._scope:
                await self._follow(channel, stream)
        finally:
            with anyio.CancelScope(shield=True):
                await channel.aclose()

    async def _follow(self, channel: Channel, stream: anyio.abc.SocketStream) -> None:
        first = await channel.receive()
        assert isinstance(first, m.StartLogin), first
        self.start = first
        script = self._scripts[first.name]
        for step in script.says:
            if isinstance(step, Junk):
                await stream.send(step.line)
            elif isinstance(step, Await):
                await step.event.wait()
            elif isinstance(step, ExpectPaste):
                message = await channel.receive()
                assert isinstance(message, m.DeliverCallback), message
                self.pastes.append(message.query)
            else:
                await channel.send(step)
        if isinstance(script.then, Exit):
            await channel.aclose()
            self._exit(script.then.code)
            return
        while True:
            message = await channel.receive()
            if isinstance(message, m.Shutdown):
                self._events.append(("shutdown",))
                if not script.then.ignore:
                    self._exit(0)
                    return
            elif message is None:
                if not script.then.ignore:
                    self._exit(0)
                    return
                await anyio.sleep_forever()  # a hung child: only a signal ends it


class ScriptedLauncher:
    """Starts a ``ScriptedChild`` per login, as a task of the test's task group."""

    method: StartMethod = "spawn"

    def __init__(
        self,
        tasks: anyio.abc.TaskGroup,
        scripts: Mapping[str, Script],
        events: list[tuple[Any, ...]],
    ) -> None:
        self._tasks = tasks
        self._scripts = scripts
        self._events = events
        self._pids = itertools.count(1000)
        self.children: list[ScriptedChild] = []

    async def start(self, listener: socket.socket, channel: socket.socket) -> ChildProcess:
        child = ScriptedChild(next(self._pids), self._scripts, self._events)
        self._events.append(("start", child.pid))
        self.children.append(child)
        # The caller closes its copy of ``channel`` right away, as with a real child.
        self._tasks.start_soon(child.run, channel.dup())
        return child


# --- the harness -------------------------------------------------------------------------


@dataclass
class Run:
    results: dict[str, FlowResult]
    events: list[tuple[Any, ...]]
    said: list[tuple[str | None, str]]
    notices: Notices
    launcher: ScriptedLauncher
    store: FakeStore
    browsed: list[str]

    def sentences(self, name: str) -> list[str]:
        return [sentence for who, sentence in self.said if who == name]


Browser = Callable[[str, ServerSpec], object]


async def supervise(
    scripts: Mapping[str, Script],
    *,
    specs: Sequence[ServerSpec] | None = None,
    limit: float = 10.0,
    store: FakeStore | None = None,
    busy: frozenset[int] = frozenset(),
    browser: Browser | None = None,
    pastes: AsyncIterator[str] | None = None,
    cancel_when: anyio.Event | None = None,
    interactive: bool = True,
    refresher: Refresher | None = None,
    discoverer: Discoverer | None = None,
    now: float = NOW,
    request: LoginRequest | None = None,
) -> Run:
    """Run the logins of ``scripts`` to their end (or until ``cancel_when`` is set), with
    the clock at ``now`` and no network: a refresh or a lookup nobody injected fails."""
    events: list[tuple[Any, ...]] = []
    said: list[tuple[str | None, str]] = []
    browsed: list[str] = []
    store = store if store is not None else FakeStore()
    notices = Notices()
    results: dict[str, FlowResult] = {}

    def record_browser(url: str, spec: ServerSpec) -> object:
        browsed.append(url)
        return None

    with anyio.fail_after(20):  # a hang is a failure, not a stuck suite
        async with anyio.create_task_group() as children:
            launcher = ScriptedLauncher(children, scripts, events)
            supervisor = Supervisor(
                store=store,
                registry=FakeRegistry(events, busy),
                launcher=launcher,
                browser=browser or record_browser,
                interactive=interactive,
                progress=lambda event: said.append((event.name, str(event))),
                notices=notices,
                refresher=refresher or no_network_refresher,
                discoverer=discoverer or no_network_discoverer,
                clock=lambda: now,
            )
            async with anyio.create_task_group() as outer:
                if pastes is not None:
                    outer.start_soon(supervisor.read_pastes, pastes)
                if cancel_when is not None:

                    async def cancel_later() -> None:
                        await cancel_when.wait()
                        outer.cancel_scope.cancel()

                    outer.start_soon(cancel_later)
                async with anyio.create_task_group() as logins:
                    for spec in specs or [ServerSpec(name=n, url=SERVER_URL) for n in scripts]:
                        logins.start_soon(supervisor.run_login, spec, limit, results, request)
                outer.cancel_scope.cancel()
        # Leaving ``children`` means every scripted child's task has ended.
    return Run(results, events, said, notices, launcher, store, browsed)


def signals_browser(opened: anyio.Event) -> Browser:
    """A browser whose call (in its daemon thread) returns an awaitable that, awaited on
    the loop by the supervisor, tells the test the browser was opened."""

    def browser(url: str, spec: ServerSpec) -> Awaitable[None]:
        async def done() -> None:
            opened.set()

        return done()

    return browser


def index(events: list[tuple[Any, ...]], *event: Any) -> int:
    return events.index(tuple(event))


def assert_stopped_then_released(run: Run, pid: int, port: int) -> None:
    """The lease was handed to the child, and released only after the child's exit."""
    exits = [i for i, e in enumerate(run.events) if e[0] == "exit"]
    assert exits, run.events
    assert index(run.events, "hand_over", pid) < exits[0] < index(run.events, "release", port)


# --- success -----------------------------------------------------------------------------


async def test_a_login_succeeds_and_is_saved() -> None:
    run = await supervise({"srv": Script(a_person_logs_in())})
    result = run.results["srv"]
    assert result.ok and result.error is None and not result.deferred
    assert result.tokens is not None and result.tokens.access_token == "tok-1"
    assert result.interactive is True
    assert result.port == 41000
    assert run.store.saved["srv"].tokens.access_token == "tok-1"
    assert run.sentences("srv") == [
        "nothing usable is stored; logging in",
        "listening on http://127.0.0.1:41000/callback",
        "waiting for the login in the browser",
        "callback received (http); getting tokens",
        "logged in",
    ]
    [child] = run.launcher.children
    assert child.start is not None
    assert child.start.redirect_uri == "http://127.0.0.1:41000/callback"
    assert child.start.client_info is None and child.start.challenge is None
    assert child.start.configured_timeout == 10.0
    assert 0 < child.start.time_left <= 10.0 - 0.25  # the child's deadline comes first
    assert run.events == [
        ("acquire", 0, 0.0),
        ("start", child.pid),
        ("hand_over", child.pid),
        ("close_socket",),
        ("exit", 0),
        ("release", 41000),
    ]
    assert run.browsed == [AUTH_URL]


async def test_a_server_that_asks_for_no_login_is_ok_without_tokens() -> None:
    run = await supervise({"srv": Script([m.ServerReady(port=41000), m.NotChallenged(200)])})
    result = run.results["srv"]
    assert result.ok and result.deferred and result.tokens is None and result.error is None
    assert run.store.saved == {}
    assert run.sentences("srv")[-1] == "no login needed yet"


async def test_an_interactive_login_waits_for_the_browser_call() -> None:
    opened = anyio.Event()
    script = Script(
        [
            m.ServerReady(port=41000),
            m.AuthorizationStarted(url=AUTH_URL, state="st-1"),
            Await(opened),  # the browser was called with the URL
            m.CallbackAccepted(source="http"),
            m.TokensIssued(LOGIN_RECORD, True),
        ]
    )
    run = await supervise({"srv": script}, browser=signals_browser(opened))
    result = run.results["srv"]
    assert result.ok and result.interactive is True
    assert run.store.saved["srv"].tokens.access_token == "tok-1"


async def test_a_paste_is_routed_to_the_child_armed_for_its_state() -> None:
    send, receive = anyio.create_memory_object_stream[str](4)

    def paste_browser(url: str, spec: ServerSpec) -> Awaitable[None]:
        async def paste() -> None:
            await send.send("unrelated text")
            await send.send("code=c-1&state=st-1")

        return paste()

    async def pastes() -> AsyncIterator[str]:
        async with receive:
            async for text in receive:
                yield text

    script = Script(
        [
            m.ServerReady(port=41000),
            m.AuthorizationStarted(url=AUTH_URL, state="st-1"),
            ExpectPaste(),
            m.CallbackAccepted(source="paste"),
            m.TokensIssued(LOGIN_RECORD, True),
        ]
    )
    async with send:
        run = await supervise({"srv": script}, browser=paste_browser, pastes=pastes())
    assert run.results["srv"].ok
    [child] = run.launcher.children
    assert child.pastes == ["code=c-1&state=st-1"]
    assert any(who is None for who, _ in run.said)  # the unrelated text was answered
    assert "callback received (paste); getting tokens" in run.sentences("srv")


# --- failures ----------------------------------------------------------------------------


async def test_a_denial_is_the_logins_error() -> None:
    script = Script(
        [
            m.ServerReady(port=41000),
            m.AuthorizationStarted(url=AUTH_URL, state="st-1"),
            m.LoginFailed(kind="AuthorizationDenied", message="srv: access_denied"),
        ]
    )
    run = await supervise({"srv": script})
    result = run.results["srv"]
    assert not result.ok and result.tokens is None
    assert type(result.error) is AuthorizationDenied
    assert result.interactive is True  # a person was asked, even if they said no
    assert run.store.saved == {}
    [child] = run.launcher.children
    assert_stopped_then_released(run, child.pid, 41000)


async def test_a_silent_child_times_out_and_is_shut_down() -> None:
    script = Script([m.ServerReady(port=41000)], then=UntilShutdown())
    run = await supervise({"srv": script}, limit=0.5)
    result = run.results["srv"]
    assert isinstance(result.error, FlowTimeout)
    assert str(result.error) == "srv: no login within 0.5 s"
    assert 0.5 <= result.elapsed < 5
    [child] = run.launcher.children
    assert index(run.events, "shutdown") < index(run.events, "exit", 0)
    assert_stopped_then_released(run, child.pid, 41000)


async def test_a_child_that_ignores_shutdown_is_terminated_before_the_lease_goes() -> None:
    script = Script([m.ServerReady(port=41000)], then=UntilShutdown(ignore=True))
    run = await supervise({"srv": script}, limit=0.3)
    assert isinstance(run.results["srv"].error, FlowTimeout)
    assert len(run.launcher.children) == 1
    shutdown, term = index(run.events, "shutdown"), index(run.events, "signal", "SIGTERM")
    assert shutdown < term < index(run.events, "exit", -15) < index(run.events, "release", 41000)


@pytest.mark.parametrize("ready", [True, False], ids=["after ready", "before ready"])
async def test_a_child_that_exits_without_an_outcome_crashed(ready: bool) -> None:
    says: list[Step] = [m.ServerReady(port=41000)] if ready else []
    run = await supervise({"srv": Script(says, then=Exit(3))})
    result = run.results["srv"]
    assert isinstance(result.error, FlowCrashed)
    assert str(result.error) == "srv: the login's child process exited (3) without an outcome"
    [child] = run.launcher.children
    assert (("close_socket",) in run.events) is ready  # only a ready child serves it
    assert_stopped_then_released(run, child.pid, 41000)


@pytest.mark.parametrize(
    "says",
    [
        [m.ServerReady(port=41000), Junk(b"this is not json\n")],
        [Junk(b'{"v":1,"type":"ServerReady","port":1}\n')],  # another version, first
        [m.TokensIssued(LOGIN_RECORD, False)],  # tokens before the server listened
        [m.ServerReady(port=41000), m.TokensIssued(LOGIN_RECORD, False)],  # no person
        [m.ServerReady(port=41000), m.CallbackAccepted(source="http")],  # out of turn
    ],
    ids=["junk", "junk first", "tokens first", "tokens unasked", "out of turn"],
)
async def test_a_protocol_violation_fails_the_login_as_crashed(says: list[Step]) -> None:
    run = await supervise({"srv": Script(says, then=UntilShutdown())})
    result = run.results["srv"]
    assert isinstance(result.error, FlowCrashed)
    assert str(result.error).startswith("srv: the child broke the protocol"), result.error
    assert result.tokens is None
    [child] = run.launcher.children
    assert ("shutdown",) in run.events  # it was still running: it was told to stop
    assert_stopped_then_released(run, child.pid, 41000)


async def test_tokens_that_do_not_decode_are_a_crash_and_nothing_is_saved() -> None:
    bad = {**LOGIN_RECORD, "tokens": "not an object"}
    run = await supervise({"srv": Script(a_person_logs_in(record=bad))})
    assert isinstance(run.results["srv"].error, FlowCrashed)
    assert "bad tokens" in str(run.results["srv"].error)
    assert run.store.saved == {}


async def test_one_logins_crash_leaves_the_other_alone() -> None:
    run = await supervise(
        {
            "bad": Script([m.ServerReady(port=41000)], then=Exit(1)),
            "good": Script(a_person_logs_in(41001)),
        }
    )
    assert isinstance(run.results["bad"].error, FlowCrashed)
    assert run.results["good"].ok


# --- cancellation ------------------------------------------------------------------------


async def test_cancellation_stops_and_waits_for_the_child_before_releasing() -> None:
    opened = anyio.Event()
    script = Script(
        [m.ServerReady(port=41000), m.AuthorizationStarted(url=AUTH_URL, state="st-1")],
        then=UntilShutdown(),
    )
    run = await supervise({"srv": script}, browser=signals_browser(opened), cancel_when=opened)
    assert run.results == {}  # cancelled: no result, and no exception from the login
    [child] = run.launcher.children
    assert child.returncode == 0
    assert index(run.events, "shutdown") < index(run.events, "exit", 0)
    assert_stopped_then_released(run, child.pid, 41000)


# --- ports -------------------------------------------------------------------------------


async def test_a_busy_configured_port_fails_without_starting_a_child() -> None:
    spec = ServerSpec(name="srv", url=SERVER_URL, redirect_port=5173)
    run = await supervise({"srv": Script([])}, specs=[spec], busy=frozenset({5173}))
    result = run.results["srv"]
    assert isinstance(result.error, CallbackPortBusy)
    assert "5173" in str(result.error)
    assert run.launcher.children == []
    [(what, port, wait)] = run.events
    assert (what, port) == ("acquire", 5173)
    assert 9 < wait <= 10.0  # the configured port is waited for until the deadline


async def test_a_busy_registered_port_falls_back_to_any_and_says_so() -> None:
    stored = StoredLogin.from_dict(
        {
            **LOGIN_RECORD,
            "expires_at": 1.0,  # expired, no refresh token: a login (not the fast path)
            "client_info": {
                "client_id": "dyn",
                "redirect_uris": ["http://127.0.0.1:6000/callback"],
            },
        }
    )
    run = await supervise(
        {"srv": Script(a_person_logs_in())},
        store=FakeStore({"srv": stored}),
        busy=frozenset({6000}),
    )
    assert run.results["srv"].ok
    assert run.results["srv"].port == 41000
    assert run.events[:2] == [("acquire", 6000, 0.0), ("acquire", 0, 0.0)]
    taken = run.sentences("srv")[1]
    assert taken.startswith("port 6000 is taken (") and taken.endswith("); registering again")
    [child] = run.launcher.children
    assert child.start is not None and child.start.client_info is not None  # still offered


# --- the renewal policy, carried out (refresher, lookup and clock injected) ----------------


class Refreshes:
    """An injected refresher: each call answers the next of ``answers`` (a login, or an
    error to raise) and records the login it was given."""

    def __init__(self, *answers: StoredLogin | Exception) -> None:
        self.answers = list(answers)
        self.given: list[StoredLogin] = []

    async def __call__(self, login: StoredLogin, timeout: float) -> StoredLogin:
        self.given.append(login)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def refreshed(access: str = "new-at") -> StoredLogin:
    return stored_login(access=access, refresh="new-rt", expires_at=NOW + 3600)


async def test_a_valid_stored_login_is_the_answer_with_no_port_and_no_child() -> None:
    stored = stored_login(expires_at=NOW + 3600)
    run = await supervise({"srv": Script([])}, store=FakeStore({"srv": stored}))
    result = run.results["srv"]
    assert result.ok and result.tokens is stored.tokens and result.port is None
    assert run.events == [] and run.launcher.children == [] and run.store.saved == {}


async def test_an_expired_login_is_refreshed_here_and_saved() -> None:
    refresher = Refreshes(refreshed())
    run = await supervise(
        {"srv": Script([])}, store=FakeStore({"srv": stored_login()}), refresher=refresher
    )
    assert run.results["srv"].ok
    assert run.results["srv"].tokens.access_token == "new-at"  # type: ignore[union-attr]
    assert [given.tokens.refresh_token for given in refresher.given] == ["old-rt"]
    assert run.store.saved["srv"].tokens.refresh_token == "new-rt"
    assert run.events == [] and run.launcher.children == []


async def test_a_dead_grant_logs_in_and_the_child_never_gets_the_refresh_token() -> None:
    refresher = Refreshes(RefreshRefused("dead", code="invalid_grant"))
    run = await supervise(
        {"srv": Script(a_person_logs_in())},
        store=FakeStore({"srv": stored_login()}),
        refresher=refresher,
    )
    assert run.results["srv"].ok
    [child] = run.launcher.children
    assert child.start is not None
    assert child.start.client_info is not None  # the registration is reused
    assert "old-rt" not in repr(child.start.client_info) and "old-at" not in repr(child.start)
    assert len(refresher.given) == 1  # sent once, in the parent only
    assert run.store.saved["srv"].tokens.access_token == "tok-1"  # only the new login


async def test_a_failed_relogin_leaves_the_old_login_as_it_was() -> None:
    store = FakeStore({"srv": stored_login()})
    script = Script(
        [
            m.ServerReady(port=41000),
            m.AuthorizationStarted(url=AUTH_URL, state="st-1"),
            m.LoginFailed(kind="AuthorizationDenied", message="srv: no"),
        ]
    )
    run = await supervise(
        {"srv": script}, store=store, refresher=Refreshes(RefreshRefused("x", code="invalid_grant"))
    )
    assert isinstance(run.results["srv"].error, AuthorizationDenied)
    assert run.store.saved == {}  # nothing written over the old record


async def test_a_failure_of_the_moment_keeps_the_login_and_asks_nobody() -> None:
    refresher = Refreshes(RefreshFailed("503", temporary=True))
    run = await supervise(
        {"srv": Script([])}, store=FakeStore({"srv": stored_login()}), refresher=refresher
    )
    error = run.results["srv"].error
    assert isinstance(error, RefreshFailed) and error.temporary
    assert run.events == [] and run.store.saved == {}


async def test_a_refusal_while_the_token_is_valid_uses_it() -> None:
    stored = stored_login(expires_at=NOW + 20)  # inside the margin, still valid
    refresher = Refreshes(RefreshRefused("too early", code="invalid_grant"))
    run = await supervise(
        {"srv": Script([])}, store=FakeStore({"srv": stored}), refresher=refresher
    )
    result = run.results["srv"]
    assert result.ok and result.tokens is stored.tokens
    assert run.store.saved == {} and run.events == []


async def test_without_a_person_nothing_starts() -> None:
    run = await supervise({"srv": Script([])}, interactive=False)
    assert isinstance(run.results["srv"].error, NeedsInteraction)
    assert run.events == [] and run.launcher.children == []


async def test_an_unusable_lock_fails_closed() -> None:
    refresher = Refreshes(refreshed())
    run = await supervise(
        {"srv": Script([])},
        store=FakeStore({"srv": stored_login()}, unlockable=True),
        refresher=refresher,
    )
    error = run.results["srv"].error
    assert isinstance(error, LoginLockUnavailable) and error.path == "/store/srv.lock"
    assert refresher.given == [] and run.store.saved == {} and run.events == []


async def test_lost_metadata_is_looked_up_before_the_refresh() -> None:
    looked_up: list[str] = []

    async def discoverer(url: str, timeout: float, hint: str | None) -> OAuthMetadata:
        looked_up.append(url)
        return OAuthMetadata.model_validate(METADATA)

    refresher = Refreshes(refreshed())
    run = await supervise(
        {"srv": Script([])},
        store=FakeStore({"srv": stored_login(metadata=False)}),
        refresher=refresher,
        discoverer=discoverer,
    )
    assert run.results["srv"].ok and looked_up == [SERVER_URL]
    [given] = refresher.given
    assert given.oauth_metadata is not None and given.granted_by == ISSUER


async def test_a_refresh_token_is_not_sent_to_another_issuer() -> None:
    moved = stored_login(granted_by="http://127.0.0.1:9")
    refresher = Refreshes()
    run = await supervise(
        {"srv": Script(a_person_logs_in())}, store=FakeStore({"srv": moved}), refresher=refresher
    )
    assert run.results["srv"].ok
    assert refresher.given == []
    [child] = run.launcher.children
    assert child.start is not None and child.start.client_info is None


async def test_a_step_up_challenge_reaches_the_child_with_the_union_of_scopes() -> None:
    stored = StoredLogin.from_dict(
        {**stored_login(expires_at=NOW + 3600).to_dict(), "tokens": {
            "access_token": "at", "token_type": "Bearer", "scope": "read"}}
    )  # fmt: skip
    challenge = Challenge(403, error="insufficient_scope", scope="write")
    run = await supervise(
        {"srv": Script(a_person_logs_in())},
        store=FakeStore({"srv": stored}),
        request=LoginRequest(challenge=challenge),
    )
    assert run.results["srv"].ok
    [child] = run.launcher.children
    assert child.start is not None
    assert child.start.scope == "read write"
    assert child.start.challenge == 'Bearer error="insufficient_scope", scope="write"'


DOCUMENT = "https://client.test/metadata.json"


async def test_a_refused_document_is_marked_and_the_login_registers_instead() -> None:
    spec = ServerSpec(
        name="srv",
        url=SERVER_URL,
        client_metadata_url=DOCUMENT,
        client_metadata_ports=frozenset({41000}),
    )
    refused = [
        m.ServerReady(port=41000),
        m.AuthorizationStarted(url=AUTH_URL, state="st-1"),
        m.CallbackAccepted(source="http"),
        m.LoginFailed(kind="ClientMetadataRefused", message="srv: refused the document"),
    ]

    class TwoChildren(dict[str, Script]):
        def __getitem__(self, name: str) -> Script:
            first = not hasattr(self, "used")
            self.used = True
            return Script(refused) if first else Script(a_person_logs_in())

    run = await supervise(TwoChildren(srv=Script([])), specs=[spec])
    assert run.results["srv"].ok
    first, second = run.launcher.children
    assert first.start is not None and first.start.client_metadata_url == DOCUMENT
    assert second.start is not None and second.start.client_metadata_url is None
    assert run.store.cimd_off == {"srv"}
    # The document's port first, then any port for the dynamic registration.
    acquired = [e for e in run.events if e[0] == "acquire"]
    assert acquired == [("acquire", frozenset({41000}), 0.0), ("acquire", 0, 0.0)]
