"""The processes that ``scripts/bench_flows.py`` starts: the sandbox, and one measured side.

    python scripts/_bench_flows_worker.py sandbox
    python scripts/_bench_flows_worker.py {bare,runner} cold N --url U --sandbox-port P --dir D
    python scripts/_bench_flows_worker.py {bare,runner} warm --url U --sandbox-port P --dir D

Every answer is one line on stdout, ``BENCH {json}``; anything else on stdout is ignored.

- ``sandbox``: one sandbox server (authorization server + MCP server, runner.sandbox) in
  this process; prints its URL and port, then serves. Commands on stdin, one a line:
  ``counts`` (its grant counters), ``stop`` (or end of stdin).
- ``cold``: a fresh host process whose first call is N concurrent logins; prints when the
  process started (after the standard library's imports), the side's imports, the call.
- ``warm``: a host process that has paid for everything once (imports, one login; the
  runner side also an entered ``Runner`` and ``warm_up()``), then runs rounds on command:
  ``run N TAG`` (N concurrent logins to servers named ``TAG-1`` ... ``TAG-N``), ``quit``.

The two sides do the same protocol work per login, the work the runner's child does
(``runner._child._sdk.drive_login``): one ``OAuthClientProvider`` with the same client metadata and
in-memory storage; one POST of an MCP ``initialize`` through ``AsyncClient(auth=provider)``
whose 401 starts the SDK's flow (protected resource and authorization server discovery,
dynamic client registration, the authorization URL, the callback on a loopback listener of
the login's own, the code exchange), then the same POST again with the token, whose status
is read. The consent browser is the same stdlib function on both sides, each call in a
daemon thread (the runner's own way of calling a host's ``browser``).

- bare: the SDK in this process, ``asyncio.gather`` over the logins; each login's listener
  is ``asyncio.start_server`` on ``127.0.0.1:0`` (kept open from before the provider exists
  to the end of the login: no bind-twice race), serving until its code arrives: only
  ``GET /callback`` with the login's state (compared in constant time) finishes it, any
  other request gets 404/400 and the wait goes on.
- runner: ``authorize_many`` (cold: the module-level one, a temporary ``Runner``; warm: a
  ``Runner``'s); it ends when the tokens are saved in the ``TokenStore`` and the child and
  lease are gone.

Every time is ``time.monotonic()``, one clock for every process on Linux, so the parent can
compare a child's timestamps with its own.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import importlib
import json
import os
import resource
import secrets
import ssl
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

STARTED = time.monotonic()  # the interpreter is up and the standard library imported

#: The phases of a login, and the runner's progress sentences that mark them (delivered
#: from its progress thread, so a little late); the bare side notes them where they happen.
PHASES = ("listening", "authorizing", "callback", "done")
_PHASES = {
    "Listening": "listening",  # the child's ServerReady
    "WaitingForBrowser": "authorizing",  # AuthorizationStarted
    "CallbackReceived": "callback",  # CallbackAccepted
    "Finished": "done",  # the FlowResult (after the child exited, the lease released)
}
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found"}
# What the runner's child sends (runner._child._sdk._INITIALIZE): the request that starts a login.
_INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "mcp-oauth-flows", "version": "0.1"},
    },
}


def emit(payload: dict[str, Any]) -> None:
    sys.stdout.write("BENCH " + json.dumps(payload) + "\n")
    sys.stdout.flush()


def cpu_seconds() -> float:
    """CPU time of this process and of every descendant it has waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    waited = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + waited.ru_utime + waited.ru_stime


# --- the consent browser (both sides) ------------------------------------------------------


def consent_browser(sandbox_port: int, timeout: float) -> Callable[..., int]:
    """A browser that follows the sandbox's consent redirect to the callback (stdlib only,
    so that neither side pays for an HTTP client it would not otherwise load)."""

    def visit(url: str, spec: object = None) -> int:
        del spec
        target = url
        for _hop in range(10):
            parts = urlsplit(target)
            if parts.hostname != "127.0.0.1" or parts.port is None:
                raise RuntimeError(f"refusing to leave loopback: {parts.netloc}")
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
            try:
                conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""))
                response = conn.getresponse()
                response.read()
                location = response.getheader("location")
            finally:
                conn.close()
            if parts.port != sandbox_port:
                return response.status  # that was the callback
            if response.status not in _REDIRECTS or not location:
                raise RuntimeError(f"{parts.path} answered {response.status}, not a redirect")
            target = urljoin(target, location)
        raise RuntimeError("more than 10 redirects")

    return visit


# --- the bare SDK, in process --------------------------------------------------------------


@dataclass(frozen=True)
class BareSdk:
    """What the bare side imports: the SDK's client and its HTTP client module."""

    provider: Any  # mcp.client.auth.OAuthClientProvider
    metadata: Any  # mcp.shared.auth.OAuthClientMetadata
    any_url: Any  # pydantic.AnyUrl
    code_result: Any  # mcp.shared.auth.AuthorizationCodeResult (2.x) or None (1.x)
    http: Any  # httpx2 (mcp 2.x) or httpx (1.x)


def import_bare() -> BareSdk:
    # The same switch as runner._child._sdk (by feature, not version), without importing runner.
    import mcp.shared.auth
    from mcp.client.auth import OAuthClientProvider
    from mcp.shared.auth import OAuthClientMetadata
    from pydantic import AnyUrl

    code_result = getattr(mcp.shared.auth, "AuthorizationCodeResult", None)
    http_module = importlib.import_module("httpx" if code_result is None else "httpx2")
    return BareSdk(OAuthClientProvider, OAuthClientMetadata, AnyUrl, code_result, http_module)


@dataclass
class TlsChoice:
    """How the bare side's HTTP clients get their TLS context: each its own (``verify=True``,
    the SDK's and today's hosts' way), or one shared by the process (``--bare-tls shared``)."""

    shared: bool
    context: ssl.SSLContext | None = None


class _MemoryStorage:
    """The SDK's ``TokenStorage`` in memory (as ``runner._child._sdk.MemoryStorage``)."""

    def __init__(self) -> None:
        self.tokens: Any = None
        self.client_info: Any = None

    async def get_tokens(self) -> Any:
        return self.tokens

    async def set_tokens(self, tokens: Any) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> Any:
        return self.client_info

    async def set_client_info(self, client_info: Any) -> None:
        self.client_info = client_info


class _Callback:
    """One login's loopback listener: serves until its code arrives."""

    def __init__(self) -> None:
        self.state: str | None = None
        self.result: asyncio.Future[tuple[str, str, str | None]] = (
            asyncio.get_running_loop().create_future()
        )

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            method, _, rest = request_line.partition(" ")
            parts = urlsplit(rest.rpartition(" ")[0])
            status, body = self._judge(method, parts.path, parts.query)
            payload = body.encode()
            writer.write(
                f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
                "Content-Type: text/plain; charset=utf-8\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass
        finally:
            writer.close()

    def _judge(self, method: str, path: str, query: str) -> tuple[int, str]:
        if method != "GET" or path != "/callback":
            return 404, "not found"
        fields = parse_qs(query)
        state = fields.get("state", [""])[0]
        if self.state is None or not secrets.compare_digest(state, self.state):
            return 400, "this is not the callback of this login"
        if self.result.done():
            return 400, "this login has its code already"
        if "error" in fields:
            self.result.set_exception(RuntimeError(f"denied: {fields['error'][0]}"))
            return 400, "authorization was refused"
        if "code" not in fields:
            return 400, "no code"
        self.result.set_result((fields["code"][0], state, fields.get("iss", [None])[0]))
        return 200, "Logged in. You may close this window."


async def bare_login(
    sdk: BareSdk,
    url: str,
    browser: Callable[..., int],
    timeout: float,
    called: float,
    tls: ssl.SSLContext | None,
) -> tuple[float, dict[str, float]]:
    """One login with the SDK alone, the way a host does it: its duration in seconds, and
    when (since ``called``) it reached each of ``PHASES``."""
    started = time.monotonic()
    phases: dict[str, float] = {}
    loop = asyncio.get_running_loop()
    callback = _Callback()
    server = await asyncio.start_server(callback.handle, "127.0.0.1", 0, backlog=16)
    port = server.sockets[0].getsockname()[1]
    redirect_uri = f"http://127.0.0.1:{port}/callback"
    phases["listening"] = time.monotonic() - called

    def open_browser(address: str) -> None:
        try:
            browser(address)
        except Exception as exc:
            loop.call_soon_threadsafe(_fail, callback.result, exc)

    async def on_redirect(address: str) -> None:
        states = parse_qs(urlsplit(address).query).get("state", [])
        if len(states) != 1:
            raise RuntimeError("the authorization URL carries no single state")
        callback.state = states[0]
        phases["authorizing"] = time.monotonic() - called
        threading.Thread(target=open_browser, args=(address,), daemon=True).start()

    async def on_callback() -> Any:
        code, state, iss = await callback.result
        phases["callback"] = time.monotonic() - called
        if sdk.code_result is None:
            return (code, state)
        return sdk.code_result(code=code, state=state, iss=iss)

    try:
        async with asyncio.timeout(timeout):
            provider = sdk.provider(
                server_url=url,
                client_metadata=sdk.metadata(
                    redirect_uris=[sdk.any_url(redirect_uri)],
                    client_name="bench-bare",
                    grant_types=["authorization_code", "refresh_token"],
                    response_types=["code"],
                    token_endpoint_auth_method="none",
                ),
                storage=_MemoryStorage(),
                redirect_handler=on_redirect,
                callback_handler=on_callback,
            )
            async with (
                sdk.http.AsyncClient(
                    auth=provider,
                    timeout=timeout,
                    follow_redirects=False,
                    verify=True if tls is None else tls,
                ) as c,
                c.stream(
                    "POST",
                    url,
                    json=_INITIALIZE,
                    headers={"Accept": "application/json, text/event-stream"},
                ) as response,
            ):
                status = response.status_code
            if status in (401, 403) or provider.context.current_tokens is None:
                raise RuntimeError(f"no login: HTTP {status}")
    finally:
        server.close()
        await server.wait_closed()
    phases["done"] = time.monotonic() - called
    return time.monotonic() - started, phases


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


async def bare_round(
    sdk: BareSdk, n: int, url: str, browser: Callable[..., int], timeout: float, tls: TlsChoice
) -> dict[str, Any]:
    """N logins at once; with ``tls.shared``, every client of this process gets one TLS
    context (built at the first round's start) instead of building its own."""
    started = time.monotonic()
    if tls.shared and tls.context is None:
        tls.context = sdk.http.create_ssl_context()
    outcomes = await asyncio.gather(
        *(bare_login(sdk, url, browser, timeout, started, tls.context) for _ in range(n)),
        return_exceptions=True,
    )
    wall = time.monotonic() - started
    failed = [f"{type(o).__name__}: {o}" for o in outcomes if isinstance(o, BaseException)]
    done = [o for o in outcomes if not isinstance(o, BaseException)]
    per_login = [elapsed for elapsed, _ in done]
    phases = [phase for _, phase in done]
    return {"n": n, "wall": wall, "per_login": per_login, "failed": failed, "phases": phases}


# --- the runner ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RunnerApi:
    runner: Any
    token_store: Any
    registry: Any
    authorize_many: Any


def import_runner() -> RunnerApi:
    from portlease import Registry
    from runner import Runner, TokenStore, authorize_many  # Runner loads runner._parent._runner

    return RunnerApi(Runner, TokenStore, Registry, authorize_many)


async def _no_pastes() -> AsyncIterator[str]:
    return
    yield


class Milestones:
    """The runner's ``progress``: when (since ``called``) each login reached each phase."""

    def __init__(self) -> None:
        self.called = time.monotonic()
        self.seen: dict[str, dict[str, float]] = {}

    def __call__(self, event: Any) -> None:  # a runner.events.Event, from the pump's thread
        at = time.monotonic() - self.called
        # By the type's name: runner is imported only once the worker is timing it.
        phase = _PHASES.get(type(event).__name__)
        if phase is not None and event.name is not None:
            self.seen.setdefault(event.name, {}).setdefault(phase, at)


def runner_outcome(
    n: int, wall: float, results: dict[str, Any], milestones: Milestones
) -> dict[str, Any]:
    failed = [f"{name}: {r.error}" for name, r in results.items() if not r.ok]
    # Nothing may come from the store: every login had a child on a port and a consent.
    failed += [
        f"{name}: answered without a login (port {r.port}, interactive {r.interactive})"
        for name, r in results.items()
        if r.ok and (r.port is None or not r.interactive)
    ]
    per_login = [r.elapsed for r in results.values()]
    phases = [milestones.seen.get(name, {}) for name in results]
    return {"n": n, "wall": wall, "per_login": per_login, "failed": failed, "phases": phases}


def servers(tag: str, n: int, url: str) -> dict[str, dict[str, str]]:
    return {f"{tag}-{index}": {"url": url} for index in range(1, n + 1)}


# --- the modes -----------------------------------------------------------------------------


def serve_sandbox() -> None:
    from runner.sandbox import Sandbox

    with Sandbox(servers=1, browser_timeout=10) as sandbox:
        server = sandbox.servers[0]
        emit({"event": "sandbox", "url": server.url, "port": server.port, "pid": os.getpid()})
        for line in sys.stdin:
            command = line.strip()
            if command == "counts":
                emit({"event": "counts", "counts": dict(sandbox.grant_counts(server.name))})
            elif command == "stop":
                break


async def cold(args: argparse.Namespace) -> None:
    browser = consent_browser(args.sandbox_port, args.browser_timeout)
    imports_started = time.monotonic()
    imports_cpu = time.process_time()
    if args.side == "bare":
        sdk = import_bare()
    else:
        api = import_runner()
    imported = time.monotonic()
    imports_cpu = time.process_time() - imports_cpu
    called = time.monotonic()
    if args.side == "bare":
        tls = TlsChoice(shared=args.bare_tls == "shared")
        outcome = await bare_round(sdk, args.n, args.url, browser, args.timeout, tls)
    else:
        milestones = Milestones()
        results = await api.authorize_many(
            servers("cold", args.n, args.url),
            store=api.token_store(Path(args.dir) / "tokens"),
            registry=api.registry(Path(args.dir) / "leases"),
            timeout=args.timeout,
            browser=browser,
            pastes=_no_pastes(),
            progress=milestones,
        )
        outcome = runner_outcome(args.n, time.monotonic() - called, results, milestones)
    emit(
        {
            "event": "result",
            **outcome,
            "started": STARTED,
            "imports_started": imports_started,
            "imported": imported,
            "called": called,
            "imports_cpu": imports_cpu,
            "returned": time.monotonic(),
            "cpu": cpu_seconds(),  # the runner's zygote is stopped and reaped by now
        }
    )


async def warm(args: argparse.Namespace) -> None:
    browser = consent_browser(args.sandbox_port, args.browser_timeout)
    started = time.monotonic()
    if args.side == "bare":
        sdk = import_bare()
        imported = time.monotonic()
        await _warm_rounds(args, browser, started, imported, sdk=sdk)
        return
    api = import_runner()
    imported = time.monotonic()
    async with api.runner(
        store=api.token_store(Path(args.dir) / "tokens"),
        registry=api.registry(Path(args.dir) / "leases"),
    ) as runner:
        await runner.warm_up()
        await _warm_rounds(args, browser, started, imported, runner=runner)


async def _warm_rounds(
    args: argparse.Namespace,
    browser: Callable[..., int],
    started: float,
    imported: float,
    *,
    sdk: BareSdk | None = None,
    runner: Any = None,
) -> None:
    tls = TlsChoice(shared=args.bare_tls == "shared")

    async def one_round(tag: str, n: int) -> dict[str, Any]:
        if sdk is not None:
            return await bare_round(sdk, n, args.url, browser, args.timeout, tls)
        milestones = Milestones()
        results = await runner.authorize_many(
            servers(tag, n, args.url),
            timeout=args.timeout,
            browser=browser,
            pastes=_no_pastes(),
            progress=milestones,
        )
        return runner_outcome(n, time.monotonic() - milestones.called, results, milestones)

    warmed = time.monotonic()
    prime = await one_round("prime", 1)  # pays the lazy imports and initialisations
    emit(
        {
            "event": "ready",
            "imports": imported - started,
            "warm_up": warmed - imported,
            "prime": prime,
            "pid": os.getpid(),
        }
    )
    while True:
        line = await asyncio.to_thread(sys.stdin.readline)
        words = line.split()
        if not words or words[0] == "quit":
            return
        if words[0] == "run":
            outcome = await one_round(words[2], int(words[1]))
            emit({"event": "result", **outcome})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("side", choices=["sandbox", "bare", "runner"])
    parser.add_argument("mode", nargs="?", choices=["cold", "warm"])
    parser.add_argument("n", nargs="?", type=int, default=1)
    parser.add_argument("--url", default="")
    parser.add_argument("--sandbox-port", type=int, default=0)
    parser.add_argument("--dir", default="")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--browser-timeout", type=float, default=10.0)
    parser.add_argument("--bare-tls", choices=["per-client", "shared"], default="per-client")
    args = parser.parse_args()
    if args.side == "sandbox":
        serve_sandbox()
    elif args.mode == "cold":
        asyncio.run(cold(args))
    elif args.mode == "warm":
        asyncio.run(warm(args))
    else:
        parser.error("bare and runner need a mode: cold or warm")


if __name__ == "__main__":
    main()
