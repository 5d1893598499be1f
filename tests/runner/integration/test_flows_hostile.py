"""Hostile traffic at a login's callback listener does not break the login.

Real children, a real sandbox authorization server; the "browser" is a callable that attacks
the listener before (or instead of) completing the consent. The browser runs in a worker
thread whose exceptions ``authorize_many`` swallows, so it only records what it saw and the
assertions run afterwards in the test.
"""

from __future__ import annotations

import errno
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import pytest

from portlease import Registry
from runner import FlowResult, ServerSpec, TokenStore, authorize_many
from runner.errors import AuthorizationDenied
from runner.events import Event, Listening
from runner.sandbox import Sandbox, TokenRejected, list_tools_with_token

from support.flows import (
    HOST,
    ProgressLog,
    Reply,
    authorization_response,
    authorize_and_look,
    callback_target,
    child_processes,
    http_request,
    kill_all,
    query_params,
    still_running,
)

pytestmark = pytest.mark.anyio

XSS_SCRIPT = "<script>alert(1)</script>"
XSS_IMG = '"><img src=x onerror=alert(1)>'


def assert_page_headers(reply: Reply) -> None:
    assert reply.headers.get("cache-control") == "no-store", (reply.label, reply.headers)
    assert reply.headers.get("referrer-policy") == "no-referrer", (reply.label, reply.headers)
    assert reply.headers.get("content-type", "").startswith("text/html"), reply.label


def assert_no_markup(reply: Reply) -> None:
    lowered = reply.text.lower()
    assert "<script" not in lowered, (reply.label, reply.text)
    assert "<img" not in lowered, (reply.label, reply.text)
    assert "onerror=" not in lowered or "&lt;img" in lowered, (reply.label, reply.text)


async def test_hostile_requests_do_not_end_or_break_the_login(tmp_path: Path) -> None:
    replies: list[Reply] = []
    failures: list[BaseException] = []
    idle: list[socket.socket] = []
    consent_status: list[int] = []
    before = child_processes()

    with Sandbox(servers=1) as sb:
        server = sb.servers[0]
        issuer = server.issuer  # what the sandbox sends as iss (checked in the test below)

        def hostile_browser(url: str, spec: ServerSpec) -> None:
            try:
                target = callback_target(url)
                port, state = target.port, target.state
                path = target.path
                assert path == "/callback"

                def get(label: str, tgt: str, **kw: Any) -> None:
                    replies.append(http_request(port, "GET", tgt, label=label, **kw))

                # A connection opened and never used, kept open for the rest of the login.
                idle.append(socket.create_connection((HOST, port), timeout=5))
                # A request that starts and never finishes its head (slowloris).
                slow = socket.create_connection((HOST, port), timeout=5)
                idle.append(slow)
                slow.sendall(f"GET /callback?state={quote(state)}&code=EVIL HTTP/1.1\r\n".encode())

                # Right state and right iss, with a forged code: were any of the requests
                # below accepted, the login would exchange "EVIL" and fail.
                forged = urlencode({"code": "EVIL", "state": state, "iss": issuer})

                get("favicon", "/favicon.ico")
                get("root", "/")
                get("other path with the right state", f"/anything?{forged}")
                get("path with a trailing slash", f"/callback/?{forged}")
                get("absolute-form target", f"http://evil.example/callback?{forged}")
                replies.append(http_request(port, "HEAD", f"/callback?{forged}", label="HEAD"))
                replies.append(
                    http_request(
                        port, "POST", f"/callback?{forged}", label="POST", body=b"code=EVIL"
                    )
                )
                get(
                    "wrong state",
                    "/callback?" + urlencode({"code": "EVIL", "state": state + "x", "iss": issuer}),
                )
                get("state twice", f"/callback?{forged}&state={quote(state)}")
                get("wrong Host", f"/callback?{forged}", host_header=f"evil.example:{port}")
                get(
                    "wrong Host port",
                    f"/callback?{forged}",
                    host_header=f"{HOST}:{port + 1 if port < 65535 else port - 1}",
                )
                get(
                    "Host spelled localhost", f"/callback?{forged}", host_header=f"localhost:{port}"
                )
                get("no port in Host", f"/callback?{forged}", host_header=HOST)
                oversized = urlencode(
                    {"code": "EVIL", "state": state, "iss": issuer, "pad": "A" * 9000}
                )
                assert len(oversized) > 8192
                get("oversized query", f"/callback?{oversized}")
                get(
                    "access_denied with a wrong state",
                    "/callback?"
                    + urlencode({"error": "access_denied", "state": "not-" + state, "iss": issuer}),
                )
                # XSS payloads, percent-encoded (as a browser sends them) ...
                get(
                    "xss encoded, wrong state",
                    "/callback?"
                    + urlencode(
                        {"error": XSS_SCRIPT, "error_description": XSS_IMG, "state": XSS_SCRIPT}
                    ),
                )
                get(
                    "xss encoded in state",
                    "/callback?" + urlencode({"error": "access_denied", "state": XSS_IMG}),
                )
                # ... and raw (http.client refuses only spaces and controls).
                get(
                    "xss raw",
                    "/callback?error="
                    + XSS_SCRIPT
                    + "&error_description="
                    + XSS_IMG.replace(" ", "%20")
                    + "&state="
                    + XSS_SCRIPT,
                )
                get(
                    "xss in a code with the right state, no iss",
                    "/callback?" + urlencode({"code": XSS_SCRIPT, "state": state}),
                )
            except BaseException as exc:  # recorded: authorize_many swallows browser errors
                failures.append(exc)
            finally:
                # The real consent, after all of the above.
                consent_status.append(sb.browser(url, spec))

        store = TokenStore(tmp_path / "tokens")
        registry = Registry(tmp_path / "leases")
        progress = ProgressLog()
        try:
            results = await authorize_many(
                sb.config(),
                store=store,
                registry=registry,
                timeout=30,
                browser=hostile_browser,
                progress=progress,
            )
            left_behind = still_running(before)
        finally:
            for sock in idle:
                sock.close()
            kill_all(child_processes() - before)

        assert not failures, failures
        result: FlowResult = results[server.name]
        assert result.ok, (result.error, progress.dump())
        assert result.interactive
        assert consent_status == [200]

        by_label = {reply.label: reply for reply in replies}
        expected = {
            "favicon": {404},
            "root": {404},
            "other path with the right state": {404},
            "path with a trailing slash": {404},
            "absolute-form target": {400, 404},
            "HEAD": {405},
            "POST": {405},
            "wrong state": {400},
            "state twice": {400},
            "wrong Host": {400},
            "wrong Host port": {400},
            "Host spelled localhost": {400},
            "no port in Host": {400},
            "oversized query": {400, 414},
            "access_denied with a wrong state": {400},
            "xss encoded, wrong state": {400},
            "xss encoded in state": {400},
            "xss raw": {400},
            # The state is right, but the sandbox advertises RFC 9207 iss: missing iss is a 400.
            "xss in a code with the right state, no iss": {400},
        }
        assert set(by_label) == set(expected)
        for label, statuses in expected.items():
            reply = by_label[label]
            assert reply.status in statuses, (label, reply.status, reply.text)
            assert_page_headers(reply)
            assert_no_markup(reply)
        assert by_label["HEAD"].headers.get("allow") == "GET"
        assert by_label["POST"].headers.get("allow") == "GET"
        for label in ("xss encoded, wrong state", "xss encoded in state", "xss raw"):
            assert "alert(1)" not in by_label[label].text, label  # never quoted at all

        assert result.tokens is not None
        assert result.tokens.access_token in sb.issued_tokens(server.name)
        assert await list_tools_with_token(server.url, result.tokens.access_token) == ["whoami"]
        stored = store.load(server.name)
        assert stored is not None and stored.tokens.access_token == result.tokens.access_token
    assert registry.list(stale=True) == []
    assert left_behind == [], left_behind


async def test_error_values_are_shown_escaped_and_end_the_login_at_once(tmp_path: Path) -> None:
    """A valid error response (right state and iss) carrying markup: the page shows it
    escaped, and the login ends with AuthorizationDenied at once."""
    pages: list[Reply] = []
    failures: list[BaseException] = []
    with Sandbox(servers=1) as sb:

        def browser(url: str, spec: ServerSpec) -> None:
            try:
                target = callback_target(url)
                real = query_params(authorization_response(url))
                assert real["state"] == target.state
                assert real["iss"] == sb.servers[0].issuer  # as the hostile test assumes
                query = urlencode(
                    {
                        "error": XSS_SCRIPT,
                        "error_description": XSS_IMG,
                        "state": target.state,
                        "iss": real["iss"],
                    }
                )
                pages.append(http_request(target.port, "GET", f"/callback?{query}", label="deny"))
            except BaseException as exc:
                failures.append(exc)

        started = time.monotonic()
        results = await authorize_many(
            sb.config(),
            store=TokenStore(tmp_path / "tokens"),
            registry=Registry(tmp_path / "leases"),
            timeout=30,
            browser=browser,
            progress=ProgressLog(),
        )
        elapsed = time.monotonic() - started
    assert not failures, failures
    (result,) = results.values()
    assert not result.ok
    assert isinstance(result.error, AuthorizationDenied), result.error
    assert elapsed < 10, elapsed
    (page,) = pages
    assert page.status == 200, page.text
    assert_page_headers(page)
    assert_no_markup(page)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text, page.text
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in page.text, page.text
    assert Registry(tmp_path / "leases").list(stale=True) == []


async def test_denied_consent_ends_that_login_at_once_and_not_the_other(tmp_path: Path) -> None:
    before = child_processes()
    with Sandbox(servers=2, overrides={"sandbox-2": {"consent": "deny"}}) as sb:
        registry = Registry(tmp_path / "leases")
        progress = ProgressLog()
        started = time.monotonic()
        results, left_behind = await authorize_and_look(
            before,
            sb.config(),
            store=TokenStore(tmp_path / "tokens"),
            registry=registry,
            timeout=30,
            browser=sb.browser,
            progress=progress,
        )
        elapsed = time.monotonic() - started

        ok, denied = results["sandbox-1"], results["sandbox-2"]
        assert ok.ok, (ok.error, progress.dump())
        assert not denied.ok
        assert isinstance(denied.error, AuthorizationDenied), denied.error
        assert "access_denied" in str(denied.error)
        assert denied.tokens is None
        assert denied.elapsed < 10, denied.elapsed
        assert elapsed < 10, elapsed
        assert ok.tokens is not None
        token = ok.tokens.access_token
        assert await list_tools_with_token(sb.server("sandbox-1").url, token) == ["whoami"]
        with pytest.raises(TokenRejected):
            await list_tools_with_token(sb.server("sandbox-2").url, token)
        assert sb.issued_tokens("sandbox-2") == set()
        assert TokenStore(tmp_path / "tokens").load("sandbox-2") is None
    assert registry.list(stale=True) == []
    assert left_behind == [], left_behind


class PortSquatter:
    """A thread that tries to bind a port over and over (plain, SO_REUSEADDR, SO_REUSEPORT).

    ``login_over()`` says whether the login has got its tokens (the child then closes its
    listener on purpose, before the parent releases the lease). It is asked *after* each
    successful bind: a bind that succeeded while the login was not over is a violation.
    """

    def __init__(self, port: int, login_over: Callable[[], bool]) -> None:
        self.port = port
        self.login_over = login_over
        self.attempts = 0
        self.attempts_while_running = 0
        self.successes: list[tuple[str, bool]] = []  # (mode, login over at that time)
        self.errors: set[int] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"squat-{port}", daemon=True)

    @property
    def violations(self) -> list[str]:
        return [mode for mode, over in self.successes if not over]

    def _run(self) -> None:
        modes = ("plain", "reuseaddr", "reuseport")
        while not self.stop.is_set():
            mode = modes[self.attempts % len(modes)]
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                if mode in ("reuseaddr", "reuseport"):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if mode == "reuseport":
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                self.attempts += 1
                if not self.login_over():
                    self.attempts_while_running += 1
                sock.bind((HOST, self.port))
                sock.listen(1)
            except OSError as exc:
                self.errors.add(exc.errno or 0)
            else:
                self.successes.append((mode, self.login_over()))
            finally:
                sock.close()
            self.stop.wait(0.003)  # pacing, not synchronisation


async def test_the_leased_port_cannot_be_bound_while_the_login_runs(tmp_path: Path) -> None:
    """From the moment the listener is up (before the browser is called) until the flow
    returns, nobody else can bind the login's port while the login still needs it: the
    parent's copy is closed, the child holds the only one.

    Once the authorization server has issued the tokens the child closes its listener on
    purpose and the port may be bound before ``authorize_many`` returns (the lease record
    stays until the child is reaped, so cooperating processes still keep off it); binds
    after that moment are not violations.
    """
    squatters: dict[int, PortSquatter] = {}
    before = child_processes()
    progress = ProgressLog()

    with Sandbox(servers=1) as sb:
        name = sb.servers[0].name

        def login_over() -> bool:
            return bool(sb.issued_tokens(name))

        def squat(port: int) -> PortSquatter:
            if port not in squatters:
                squatters[port] = PortSquatter(port, login_over)
                squatters[port].thread.start()
            return squatters[port]

        def start_squatting(event: Event) -> None:
            progress(event)
            if isinstance(event, Listening):
                port = urlsplit(event.url).port
                assert port is not None
                squat(port)

        def browser(url: str, spec: ServerSpec) -> int:
            squatter = squat(callback_target(url).port)
            # Let the squatter try for a while with the login waiting, then complete it.
            deadline = time.monotonic() + 5
            while squatter.attempts < 150 and time.monotonic() < deadline:
                time.sleep(0.01)
            return sb.browser(url, spec)

        try:
            results = await authorize_many(
                sb.config(),
                store=TokenStore(tmp_path / "tokens"),
                registry=Registry(tmp_path / "leases"),
                timeout=30,
                browser=browser,
                progress=start_squatting,
            )
            left_behind = still_running(before)
        finally:
            for squatter in squatters.values():
                squatter.stop.set()
            for squatter in squatters.values():
                squatter.thread.join(5)
            kill_all(child_processes() - before)
        (result,) = results.values()
        assert result.ok, (result.error, progress.dump())
        assert result.tokens is not None
        assert await list_tools_with_token(sb.servers[0].url, result.tokens.access_token)

    assert list(squatters) == [result.port]
    squatter = squatters[result.port]
    assert squatter.attempts_while_running >= 150, squatter.attempts_while_running
    assert squatter.violations == [], (squatter.violations, squatter.errors)
    assert squatter.errors <= {errno.EADDRINUSE}, squatter.errors
    assert left_behind == [], left_behind
