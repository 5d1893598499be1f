"""The child process of one login: ``python -m runner._child._login --listen-fd N --channel-fd M``.

It inherits three descriptors from its parent (through its zygote's ``Fork`` packet, or
``pass_fds`` and a pipe under ``spawn``) and binds nothing itself:

- ``--listen-fd``: the leased loopback socket, already bound and listening; a
  persistent HTTP server (uvicorn) serves every request on it until the login ends;
- ``--channel-fd``: its end of a socket pair carrying ``runner._core._messages``;
- stderr: a pipe whose tail the parent keeps, to explain a crash.

Invariants:

- the first message is ``StartLogin``; the child then runs the SDK's OAuth client from the
  challenge it carries (or, without one, from the server's answer to an ``initialize``)
  and ends with exactly one ``TokensIssued``, ``NotChallenged`` (the server asked for no
  login) or ``LoginFailed``, then exits; with ``StartLogin.flow == "device"`` it runs the
  device authorization grant instead (``runner._child._device``: ``DeviceAuthorizationStarted``
  and ``CallbackAccepted(source="device")`` come first; no callback is awaited, the listener
  keeps answering with its refusal pages);
- it never refreshes and never holds a refresh token: the parent refreshes, under the
  server's lock, so a refresh token is sent at most once per call;
- only a request judged ``Accepted`` or ``Denied`` by ``runner._core._callback`` (or such a
  paste) can finish the wait; everything else gets an escaped page and the wait goes on;
- it never reads stdin and ignores SIGINT: Ctrl-C is the parent's to handle (the
  parent also starts it in its own session, so a terminal's Ctrl-C never reaches it);
- when the channel reaches end of stream (the parent is gone) it exits at once;
- it never writes a token or code to its logs.

Start-up cost: a zygote calls :func:`preload` once, before it forks any child, so that what
every child would otherwise import or build for itself on first use (the HTTP client's
transport and TLS context, uvicorn's protocol modules, anyio's event loop backend) is
loaded once and shared, copy-on-write, by all of them (docs/benchmarks.md has the figures).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import logging
import signal
import socket
import ssl
import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import uvicorn

from runner._child import _sdk as sdk
from runner._child._device import device_login
from runner._core._callback import (
    Accepted,
    Denied,
    Expectation,
    Rejected,
    Verdict,
    judge_paste,
    judge_request,
)
from runner._core._challenge import Challenge, parse_challenge
from runner._core._messages import (
    AuthorizationStarted,
    CallbackAccepted,
    CallbackRejected,
    ChildMessage,
    DeliverCallback,
    LoginFailed,
    NotChallenged,
    ProtocolViolation,
    ServerReady,
    Shutdown,
    StartLogin,
    TokensIssued,
)
from runner._core._pages import render_page, response_headers
from runner._io._channel import Channel
from runner.errors import (
    AuthorizationDenied,
    FlowError,
    FlowTimeout,
    NeedsInteraction,
    OAuthProtocolError,
)

__all__ = ["Preloaded", "main", "preload", "serve_fds"]

logger = logging.getLogger("runner._child._login")

EXIT_OK = 0
EXIT_PROTOCOL = 2
EXIT_PARENT_GONE = 3

# ASGI type aliases kept loose on purpose: uvicorn calls this with plain dicts.
_Scope = dict[str, Any]


class _CallbackServer(uvicorn.Server):
    """uvicorn on an inherited socket, with a readiness event and no signal handlers."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = anyio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The parent owns signals; uvicorn would otherwise take SIGINT and SIGTERM.
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.ready.set()


class _LoginAttempt:
    """One login's state inside the child: what the listener expects, and the outcome."""

    def __init__(self, start: StartLogin, channel: Channel, tls: ssl.SSLContext | None) -> None:
        self.start = start
        self.channel = channel
        self.tls = tls
        self.expect = Expectation(
            host=start.redirect_host,
            port=start.redirect_port,
            path=start.callback_path,
            state=None,
            issuer=None,
            issuer_required=False,
        )
        self.provider: sdk.OAuthClientProvider | None = None
        self.interactive = False
        self.outcome: Accepted | Denied | None = None
        self.outcome_source = ""
        self.decided = anyio.Event()

    # --- the callback, over HTTP or pasted ------------------------------------------

    def offer(self, verdict: Verdict, source: str) -> None:
        """Record the first verdict that can end the wait; later ones change nothing."""
        if isinstance(verdict, Accepted | Denied) and self.outcome is None:
            self.outcome = verdict
            self.outcome_source = source
            self.decided.set()

    async def asgi(self, scope: _Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        host = next((v for k, v in scope["headers"] if k == b"host"), None)
        raw_path = scope.get("raw_path") or scope["path"].encode()
        verdict = judge_request(
            scope["method"],
            raw_path.decode("latin-1"),
            scope["query_string"].decode("latin-1"),
            None if host is None else host.decode("latin-1"),
            self.expect,
        )
        self.offer(verdict, "http")
        if isinstance(verdict, Rejected):
            logger.info("rejected %s request: %s", scope["method"], verdict.reason)
        status, page = render_page(verdict)
        encoded = page.encode()
        body = b"" if scope["method"] == "HEAD" else encoded
        headers = [(k.encode(), v.encode()) for k, v in response_headers(verdict).items()]
        headers.append((b"content-length", str(len(encoded)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def deliver(self, query: str) -> None:
        verdict = judge_paste(query, self.expect)
        self.offer(verdict, "paste")
        if isinstance(verdict, Rejected):
            await self.channel.send(CallbackRejected(status=verdict.status, reason=verdict.reason))

    # --- the SDK's handlers ---------------------------------------------------------

    async def on_redirect(self, url: str) -> None:
        if not self.start.interactive:
            raise NeedsInteraction(
                f"{self.start.name} needs a person to log in in a browser (interactive=False)"
            )
        states = parse_qs(urlsplit(url).query).get("state", [])
        if len(states) != 1:
            raise OAuthProtocolError("the SDK's authorization URL carries no single state")
        assert self.provider is not None
        issuer, required = sdk.issuer_expectation(self.provider)
        self.expect = dataclasses.replace(
            self.expect, state=states[0], issuer=issuer, issuer_required=required
        )
        self.interactive = True
        await self.channel.send(AuthorizationStarted(url=url, state=states[0]))

    async def on_callback(self) -> sdk.CodeResult:
        await self.decided.wait()
        outcome = self.outcome
        if isinstance(outcome, Denied):
            detail = f": {outcome.description}" if outcome.description else ""
            raise AuthorizationDenied(
                f"{self.start.name}: authorization was refused ({outcome.error}{detail})"
            )
        assert isinstance(outcome, Accepted)
        await self.channel.send(CallbackAccepted(source=self.outcome_source))
        return sdk.code_result(outcome.code, outcome.state, outcome.iss)

    async def report(self, message: ChildMessage) -> None:
        """Tell the parent how a device login goes (``runner._child._device``)."""
        await self.channel.send(message)

    # --- the login ------------------------------------------------------------------

    async def run(self) -> None:
        """Log in and report the single final message."""
        start = self.start
        try:
            with anyio.fail_after(start.time_left):
                if start.challenge is not None:
                    challenge = parse_challenge(401, start.challenge) or Challenge(401)
                else:
                    answer = await sdk.probe(start.server_url, start.time_left, tls=self.tls)
                    if not isinstance(answer, Challenge):
                        await self.channel.send(NotChallenged(status=answer))
                        return
                    challenge = answer
                if start.flow == "device":
                    # No callback comes: the listener goes on serving (its pages say so to
                    # anyone who opens it) and the device grant runs without the SDK.
                    record = await device_login(start, challenge, self.report, tls=self.tls)
                    self.interactive = True
                    await self.channel.send(TokensIssued(record=record, interactive=True))
                    return
                self.provider = sdk.build_provider(start, self.on_redirect, self.on_callback)
                await sdk.drive_login(
                    self.provider,
                    start.server_url,
                    start.time_left,
                    challenge,
                    scope=start.scope,
                    tls=self.tls,
                )
                record = sdk.snapshot(self.provider, start.server_url)
        except TimeoutError as exc:
            error: FlowError = (
                exc
                if isinstance(exc, FlowError)
                else FlowTimeout.no_login_within(start.name, start.configured_timeout)
            )
        except Exception as exc:
            error = sdk.error_from_sdk(exc, start.server_url)
        else:
            await self.channel.send(TokensIssued(record=record, interactive=self.interactive))
            return
        await self.channel.send(LoginFailed(kind=type(error).__name__, message=error.message))


class _Stop:
    """Why the child stopped early: set by the task that listens to the parent."""

    def __init__(self) -> None:
        self.parent_gone = False


async def _listen_to_parent(
    channel: Channel, login: _LoginAttempt, scope: anyio.CancelScope, stop: _Stop
) -> None:
    """Forward pasted callbacks; stop everything on ``Shutdown`` or when the parent is gone."""
    while True:
        try:
            message = await channel.receive()
        except ProtocolViolation:
            logger.error("the parent sent a malformed message; stopping")
            message = None
        if isinstance(message, DeliverCallback):
            await login.deliver(message.query)
        elif message is None or isinstance(message, Shutdown):
            stop.parent_gone = message is None
            scope.cancel()
            return
        else:
            logger.error("unexpected %s from the parent; ignored", type(message).__name__)


def _callback_config(app: Any) -> uvicorn.Config:
    """How the callback listener runs uvicorn: one fixed configuration for every login."""
    return uvicorn.Config(
        app,
        interface="asgi3",
        lifespan="off",
        http="h11",
        proxy_headers=False,  # nothing forwards to a loopback listener; trust no X-Forwarded-*
        ws="none",
        log_level="warning",
        access_log=False,
        server_header=False,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=1,
    )


@dataclasses.dataclass(frozen=True)
class Preloaded:
    """What :func:`preload` built for the children a zygote forks."""

    tls: ssl.SSLContext
    """The HTTP client's default TLS context (verification on, the same trust store and
    environment settings the client would use), shared by every child's client instead of
    each child building its own: building one parses the whole CA bundle (milliseconds of
    CPU and megabytes of memory per child)."""


async def _no_app(scope: _Scope, receive: Any, send: Any) -> None:  # pragma: no cover
    raise RuntimeError("preload's configuration serves nothing")


def preload() -> Preloaded:
    """Load, without any I/O, thread or event loop, what each child would load on first use.

    For a zygote, before it forks: each child then shares these pages instead of copying
    the parts of the heap that importing and building touch. Safe to fork after: it starts
    no thread, opens no socket and leaves no event loop. Guaranteed to load the HTTP
    client's transport and TLS context and uvicorn's protocol modules; which modules that
    is depends on the installed versions, so a module that is not there is not an error.
    """
    tls = sdk.tls_context()  # imports the client's transport (httpcore) and trust store
    _callback_config(_no_app).load()  # imports uvicorn's protocol and lifespan modules
    # anyio imports its asyncio backend at the first anyio.run, i.e. in every child.
    with contextlib.suppress(ImportError):
        importlib.import_module("anyio._backends._asyncio")
    return Preloaded(tls=tls)


async def _serve(
    listener: socket.socket, channel_sock: socket.socket, tls: ssl.SSLContext | None
) -> int:
    channel = await Channel.from_socket(channel_sock)
    try:
        first = await channel.receive()
    except ProtocolViolation:
        return EXIT_PROTOCOL
    if not isinstance(first, StartLogin):
        return EXIT_PARENT_GONE if first is None else EXIT_PROTOCOL
    login = _LoginAttempt(first, channel, tls)
    server = _CallbackServer(_callback_config(login.asgi))
    served = anyio.Event()

    async def serve() -> None:
        try:
            await server.serve([listener])
        finally:
            served.set()

    stop = _Stop()
    async with anyio.create_task_group() as tg:
        tg.start_soon(serve)
        tg.start_soon(_listen_to_parent, channel, login, tg.cancel_scope, stop)
        await server.ready.wait()
        await channel.send(ServerReady(port=listener.getsockname()[1]))
        await login.run()
        # Let the last page (the browser's "login complete") go out, then stop.
        server.should_exit = True
        with anyio.move_on_after(2):
            await served.wait()
        tg.cancel_scope.cancel()
    with contextlib.suppress(Exception):
        await channel.aclose()
    return EXIT_PARENT_GONE if stop.parent_gone else EXIT_OK


def serve_fds(listen_fd: int, channel_fd: int, preloaded: Preloaded | None = None) -> int:
    """Run one login on two inherited descriptors; returns the process exit code.

    The entry point for both start methods: ``main`` (a fresh interpreter, which builds
    what it needs as it goes) and the zygote's forked children (``runner._child._zygote``, which
    passes what it preloaded).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="runner.child[%(process)d] %(message)s")
    # The SDK logs whole tracebacks (and values such as states) for failures we report.
    logging.getLogger("mcp").setLevel(logging.CRITICAL)
    listener = socket.socket(fileno=listen_fd)
    channel = socket.socket(fileno=channel_fd)
    try:
        return anyio.run(_serve, listener, channel, preloaded.tls if preloaded else None)
    finally:
        listener.close()
        channel.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner._child._login", description=__doc__)
    parser.add_argument("--listen-fd", type=int, required=True)
    parser.add_argument("--channel-fd", type=int, required=True)
    args = parser.parse_args(argv)
    return serve_fds(args.listen_fd, args.channel_fd)


if __name__ == "__main__":
    sys.exit(main())
