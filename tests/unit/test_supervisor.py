"""The supervisor run whole with no child process, no registry file and no network.

Like httpx's ``MockTransport``: an in-memory launcher starts a scripted fake child, a task
that speaks ``runner.messages`` over the real socket pair and ``Channel`` the supervisor
creates; a fake registry hands out leases that record what is done to them. Every fake
writes into one ``events`` list, so the order of what the supervisor does (hand over,
close the listener copy, stop the child, wait for its exit, release) is asserted as such.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import pytest

from portlease import PortBusy
from runner import messages as m
from runner.channel import Channel
from runner.errors import (
    AuthorizationDenied,
    CallbackPortBusy,
    FlowCrashed,
    FlowTimeout,
)
from runner.launch import ChildProcess, StartMethod
from runner.notices import Notices
from runner.spec import FlowResult, ServerSpec
from runner.stored import STORE_VERSION, StoredLogin
from runner.supervisor import PortLease, Supervisor

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


SERVER_URL = "http://127.0.0.1:1/mcp"
LOGIN_RECORD = {
    "version": STORE_VERSION,
    "server_url": SERVER_URL,
    "tokens": {"access_token": "tok-1", "token_type": "Bearer"},
}
AUTH_URL = "https://as.test/authorize?state=st-1"

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
        port: int = 0,
        host: str = "127.0.0.1",
        wait: float = 0.0,
        meta: Mapping[str, str] | None = None,
    ) -> PortLease:
        self._events.append(("acquire", port, wait))
        if port in self._busy:
            raise PortBusy(port, 4242, "squatter", host=host)
        return FakeLease(port or next(self._ports), self._events)


class FakeStore:
    """An in-memory token store."""

    def __init__(self, stored: dict[str, StoredLogin] | None = None) -> None:
        self.stored = dict(stored or {})
        self.saved: dict[str, StoredLogin] = {}

    def load(self, name: str) -> StoredLogin | None:
        return self.stored.get(name)

    def save(self, name: str, login: StoredLogin) -> object:
        self.saved[name] = login
        return None

    def hold(self, name: str, timeout: float) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()


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
) -> Run:
    """Run the logins of ``scripts`` to their end (or until ``cancel_when`` is set)."""
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
                interactive=True,
                progress=lambda name, sentence: said.append((name, sentence)),
                notices=notices,
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
                        logins.start_soon(supervisor.run_login, spec, limit, results)
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


async def test_a_silent_login_succeeds_and_is_saved() -> None:
    run = await supervise(
        {"srv": Script([m.ServerReady(port=41000), m.TokensIssued(LOGIN_RECORD, False)])}
    )
    result = run.results["srv"]
    assert result.ok and result.error is None
    assert result.tokens is not None and result.tokens.access_token == "tok-1"
    assert result.interactive is False
    assert result.port == 41000
    assert run.store.saved["srv"].tokens.access_token == "tok-1"
    assert run.sentences("srv") == ["listening on http://127.0.0.1:41000/callback", "logged in"]
    [child] = run.launcher.children
    assert child.start is not None
    assert child.start.redirect_uri == "http://127.0.0.1:41000/callback"
    assert child.start.stored is None
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
    assert run.browsed == []


async def test_an_interactive_login_carries_out_its_actions_in_order() -> None:
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
    assert run.sentences("srv") == [
        "listening on http://127.0.0.1:41000/callback",
        "waiting for the login in the browser",
        "callback received (http); getting tokens",
        "logged in",
    ]
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
        [m.ServerReady(port=41000), m.CallbackAccepted(source="http")],  # out of turn
    ],
    ids=["junk", "junk first", "tokens first", "out of turn"],
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
    run = await supervise({"srv": Script([m.ServerReady(port=41000), m.TokensIssued(bad, False)])})
    assert isinstance(run.results["srv"].error, FlowCrashed)
    assert "bad tokens" in str(run.results["srv"].error)
    assert run.store.saved == {}


async def test_one_logins_crash_leaves_the_other_alone() -> None:
    run = await supervise(
        {
            "bad": Script([m.ServerReady(port=41000)], then=Exit(1)),
            "good": Script([m.ServerReady(port=41001), m.TokensIssued(LOGIN_RECORD, False)]),
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
        {"srv": Script([m.ServerReady(port=41000), m.TokensIssued(LOGIN_RECORD, False)])},
        store=FakeStore({"srv": stored}),
        busy=frozenset({6000}),
    )
    assert run.results["srv"].ok
    assert run.results["srv"].port == 41000
    assert run.events[:2] == [("acquire", 6000, 0.0), ("acquire", 0, 0.0)]
    first = run.sentences("srv")[0]
    assert first.startswith("port 6000 is taken (") and first.endswith("); registering again")
    [child] = run.launcher.children
    assert child.start is not None and child.start.stored is not None  # still offered
