"""A host with a web UI and no terminal: pending logins on a small page on 127.0.0.1.

    python examples/dashboard.py --sandbox 2          # against 2 local sandbox servers
    python examples/dashboard.py config.yaml          # the OAuth servers of a hermes config
    python examples/dashboard.py servers.json --store DIR

It prints ``dashboard: http://127.0.0.1:PORT/`` and serves, until Ctrl-C (or SIGTERM), a page
listing every login of one ``authorize_many`` call:

* per server, its state: the last progress event (``runner.events``, matched on its type;
  ``str(event)`` shown), then the result (``ok`` or the error);
* the authorization URL to open (what the ``browser=`` callback was given), as a link;
* a form to paste the address the browser landed on (when the browser runs on another machine
  and cannot reach this one's loopback listener): fed to ``pastes=``, an async iterator over a
  queue, and routed by its state to the right login, as a terminal paste would be.

``GET /logins.json`` gives the same as JSON, for scripts.

What it guarantees (a loopback page that shows login URLs, whose state is a secret until used):

* It listens on 127.0.0.1 only, and answers only requests whose ``Host`` is that address and
  port (a DNS-rebinding page, whose ``Host`` is its own name, is refused with 400).
* Every value shown (names, events, URLs, errors) is HTML-escaped; a URL is a link only when it
  is http(s). Responses carry a strict CSP (no script at all), ``no-store``, ``no-referrer``,
  ``X-Frame-Options: DENY``.
* A paste is taken only as a POST of ``application/x-www-form-urlencoded`` carrying this run's
  random token (in the form, compared in constant time), with no foreign ``Origin``: another
  site cannot post to it (CSRF). Bodies past ``MAX_BODY`` bytes are refused with 413 before
  being read in full.
* Nothing is written but what ``authorize_many`` writes (the token store); the logins end with
  their timeout, and the page stays up, showing the results, until the process is stopped.
"""

from __future__ import annotations

import argparse
import hmac
import html
import json
import secrets
import socket
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import anyio
import uvicorn
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from runner import ServerSpec, TokenStore, authorize_many, events
from runner.hermes_config import read_hermes_config

#: The largest request body read (a pasted callback address is well under 4 KiB).
MAX_BODY: Final = 16 * 1024
#: Pastes queued and not yet read by the runner (a person pastes one at a time).
MAX_QUEUED_PASTES: Final = 16
HEADERS: Final = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
}


@dataclass
class Login:
    """What the page shows of one server's login (written from the runner's threads)."""

    state: str = "starting"
    url: str | None = None
    result: str | None = None
    ok: bool | None = None


@dataclass
class Board:
    """Every login's state, behind a lock: ``progress`` and ``browser`` run in daemon threads,
    the page on the event loop."""

    logins: dict[str, Login] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def progress(self, event: events.Event) -> None:
        """The ``progress=`` callback: the last event of each login, matched on its type."""
        with self.lock:
            if event.name is None:  # a paste that named no login
                self.notes = [*self.notes[-4:], str(event)]
                return
            login = self.logins.setdefault(event.name, Login())
            match event:
                case events.Finished(result=result):
                    login.ok = result.ok
                    login.result = "ok" if result.ok else f"failed: {result.error}"
                    login.state = str(event)
                    login.url = None  # used or dead: nothing left to open
                case events.PasteRefused() | events.PasteNotUsed():
                    login.state = f"{event}; paste again"
                case _:
                    login.state = str(event)

    def browser(self, url: str, spec: ServerSpec) -> None:
        """The ``browser=`` callback: nothing opens here; the page shows the URL."""
        with self.lock:
            self.logins.setdefault(spec.name, Login()).url = url

    def snapshot(self) -> tuple[dict[str, Login], list[str]]:
        with self.lock:
            copies = {name: Login(**vars(login)) for name, login in self.logins.items()}
            return copies, list(self.notes)


def _link(url: str) -> str:
    """An http(s) URL as an escaped link; anything else as escaped text (no javascript:)."""
    text = html.escape(url)
    if urlsplit(url).scheme not in ("http", "https"):
        return f"<code>{text}</code>"
    return f'<a href="{text}" target="_blank" rel="noopener noreferrer">{text}</a>'


def render(board: Board, token: str) -> str:
    """The page: one row per login, the paste form, the notes. Every value escaped."""
    logins, notes = board.snapshot()
    done = bool(logins) and all(login.ok is not None for login in logins.values())
    rows = []
    for name, login in sorted(logins.items()):
        result = "-" if login.result is None else html.escape(login.result)
        klass = {True: "ok", False: "failed", None: "pending"}[login.ok]
        open_it = _link(login.url) if login.url else "-"
        rows.append(
            f'<tr class="{klass}"><td>{html.escape(name)}</td><td>{html.escape(login.state)}'
            f"</td><td>{open_it}</td><td>{result}</td></tr>"
        )
    note = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    refresh = "" if done else '<meta http-equiv="refresh" content="2">'
    return f"""<!doctype html>
<html><head><meta charset="utf-8">{refresh}<title>MCP logins</title>
<style>td,th{{padding:4px 10px;text-align:left}} .ok{{color:#070}} .failed{{color:#a00}}</style>
</head><body>
<h1>MCP logins</h1>
<p id="summary">{"all logins ended" if done else "logins in progress"}</p>
<table><tr><th>server</th><th>state</th><th>open to log in</th><th>result</th></tr>
{"".join(rows)}
</table>
<h2>Paste</h2>
<p>If your browser cannot reach this machine, paste the address it landed on (it starts with
http://127.0.0.1 and holds <code>code=</code> and <code>state=</code>).</p>
<form method="post" action="/paste">
<input type="hidden" name="token" value="{html.escape(token)}">
<input type="text" name="address" size="100" autocomplete="off">
<button type="submit">Send</button>
</form>
<ul id="notes">{note}</ul>
</body></html>
"""


class Dashboard:
    """The web app: the page, its JSON, the paste form; checks the Host, token and body size."""

    def __init__(self, board: Board, pastes: MemoryObjectSendStream[str], port: int) -> None:
        self.board = board
        self.pastes = pastes
        self.token = secrets.token_urlsafe(32)  # per run: the form's CSRF token
        self.origin = f"http://127.0.0.1:{port}"
        self.host = f"127.0.0.1:{port}"
        self.app = Starlette(
            routes=[
                Route("/", self.page, methods=["GET"]),
                Route("/logins.json", self.logins, methods=["GET"]),
                Route("/paste", self.paste, methods=["POST"]),
            ]
        )

    def refused(self, request: Request) -> Response | None:
        """400 for a request not addressed to this listener by its own address (rebinding)."""
        if request.headers.get("host") != self.host:
            return Response("wrong Host\n", status_code=400, headers=HEADERS)
        return None

    async def page(self, request: Request) -> Response:
        return self.refused(request) or HTMLResponse(
            render(self.board, self.token), headers=HEADERS
        )

    async def logins(self, request: Request) -> Response:
        refused = self.refused(request)
        if refused is not None:
            return refused
        logins, notes = self.board.snapshot()
        return JSONResponse(
            {"logins": {name: vars(login) for name, login in logins.items()}, "notes": notes},
            headers=HEADERS,
        )

    async def paste(self, request: Request) -> Response:
        refused = self.refused(request)
        if refused is not None:
            return refused
        origin = request.headers.get("origin")
        if origin is not None and origin != self.origin:
            return Response("foreign Origin\n", status_code=403, headers=HEADERS)
        kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if kind != "application/x-www-form-urlencoded":
            return Response("form posts only\n", status_code=415, headers=HEADERS)
        body = await _bounded_body(request)
        if body is None:
            return Response("too large\n", status_code=413, headers=HEADERS)
        try:
            fields = parse_qs(body.decode("utf-8"), max_num_fields=4)
        except (UnicodeDecodeError, ValueError):
            return Response("malformed form\n", status_code=400, headers=HEADERS)
        token = fields.get("token", [""])[0]
        if not hmac.compare_digest(token.encode(), self.token.encode()):
            return Response("stale or foreign form: reload the page\n", 403, headers=HEADERS)
        address = fields.get("address", [""])[0].strip()
        if address:
            try:
                self.pastes.send_nowait(address)
            except anyio.WouldBlock:
                return Response("too many pastes at once\n", status_code=429, headers=HEADERS)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                return Response("the logins have ended\n", status_code=409, headers=HEADERS)
        return RedirectResponse("/", status_code=303, headers=HEADERS)


async def _bounded_body(request: Request) -> bytes | None:
    """The request body, or ``None`` past ``MAX_BODY`` bytes (read no further)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def queued(receive: MemoryObjectReceiveStream[str]) -> AsyncIterator[str]:
    """``pastes=``: the addresses posted through the form, in order."""
    async with receive:
        async for address in receive:
            yield address


def loopback_socket(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1 (port 0: any free one), bound before it is printed."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", port))
    sock.listen(64)
    return sock


async def run(
    servers: Any, store: TokenStore, timeout: float, port: int, on_ready: Callable[[str], None]
) -> None:
    """Serve the page and run the logins together; return when the server is stopped."""
    board = Board()
    send, receive = anyio.create_memory_object_stream[str](MAX_QUEUED_PASTES)
    sock = loopback_socket(port)
    dashboard = Dashboard(board, send, sock.getsockname()[1])
    config = uvicorn.Config(dashboard.app, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)

    async def logins() -> None:
        async with send:
            await authorize_many(
                servers,
                store=store,
                timeout=timeout,
                browser=board.browser,
                pastes=queued(receive),
                progress=board.progress,
            )

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(logins)
        on_ready(f"http://127.0.0.1:{sock.getsockname()[1]}/")
        try:
            await server.serve(sockets=[sock])  # until Ctrl-C or SIGTERM (uvicorn's handlers)
        finally:
            tasks.cancel_scope.cancel()  # logins still waiting end now, their children stopped
            sock.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", type=Path, help="a hermes config.yaml or JSON")
    parser.add_argument("--sandbox", type=int, metavar="N", help="log in to N sandbox servers")
    parser.add_argument("--port", type=int, default=0, help="the page's port (default: any)")
    parser.add_argument("--store", type=Path, help="token directory (default: a temporary one)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per login")
    args = parser.parse_args(argv)
    if (args.sandbox is None) == (args.config is None):
        parser.error("give a CONFIG or --sandbox N (not both)")
    if args.sandbox is not None and not 1 <= args.sandbox <= 64:
        parser.error("--sandbox takes 1 to 64 servers")

    def ready(url: str) -> None:
        print(f"dashboard: {url}", flush=True)

    with ExitStack() as stack:
        if args.sandbox is not None:
            from runner.sandbox import Sandbox

            sandbox = stack.enter_context(Sandbox(servers=args.sandbox))
            servers: Any = sandbox.config()
        elif args.config.suffix == ".json":
            data = json.loads(args.config.read_text(encoding="utf-8"))
            servers = data.get("mcp_servers", data) if isinstance(data, dict) else data
        else:
            servers = read_hermes_config(args.config).specs
        store_dir = args.store or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        try:
            anyio.run(run, servers, TokenStore(store_dir), args.timeout, args.port, ready)
        except KeyboardInterrupt:  # uvicorn hands Ctrl-C back once it has stopped serving
            return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
