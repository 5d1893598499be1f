"""``python -m runner`` (also ``mcp-oauth``): log in to MCP servers, see and forget logins.

- ``authorize [CONFIG]``: log in to the OAuth servers of a hermes-agent ``config.yaml`` (or the
  same shape in JSON), all at once: stored logins are reused, expired ones refreshed, the rest
  log in through the browser (or a pasted address). One line per step per server, then a
  table; exit 0 only when every server is logged in.
- ``status [CONFIG]``: per OAuth server, logged in or not, expiry, scopes, registered port.
- ``logout NAME ... | --all``: forget stored logins.
- ``demo``: the sandbox quick start. ``login FILE``: the older JSON-only command.

Where: the hermes home is ``--hermes-home``, else ``$HERMES_HOME``, else ``~/.hermes``; CONFIG
defaults to its ``config.yaml`` and tokens go to its ``mcp-tokens/`` in hermes's own format
(``runner._stores._hermes_store``). ``--store DIR`` keeps tokens in this library's format instead.

Exit codes: 0 success; 1 a login failed; 2 a bad command line or configuration (one line on
stderr, never a traceback); 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import sys
import tempfile
import threading
import time
import warnings
import webbrowser
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import anyio

from runner._core._entries import HermesConfig
from runner._core._events import (
    CallbackReceived,
    Event,
    Finished,
    Listening,
    PasteNotUsed,
    PasteRefused,
    Refreshing,
    UsingStoredLogin,
    WaitingForBrowser,
)
from runner._core._spec import FlowResult, ServerSpec
from runner._core._stored import StoredLogin
from runner._hosts._hermes_config import read_hermes_config
from runner._parent._offloop import register_system_browsers
from runner._parent._runner import authorize_many
from runner._parent._terminal import stdin_is_terminal
from runner._stores._hermes_store import HermesTokenStore, default_hermes_home, registered_port
from runner._stores._token_store import TokenStore, TokenStoreError
from runner.errors import InvalidServerSpec

__all__ = ["main"]


class _Printer:
    """Progress lines, each prefixed with the time since start and the server."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, event: Event) -> None:
        self.say(event.name, str(event))

    def say(self, name: str | None, message: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"{elapsed:7.3f}s  {name or '':<12} {message}", flush=True)


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _outcome(result: FlowResult) -> str:
    if result.ok:
        return "ok"
    assert result.error is not None
    return f"{type(result.error).__name__}: {result.error}"


async def _demo(servers: int, timeout: float, store_dir: Path) -> int:
    from runner.sandbox import Sandbox, list_tools_with_token  # the demo's servers only

    printer = _Printer()
    with Sandbox(servers=servers) as sandbox:
        printer.say(None, f"sandbox up: {servers} MCP server(s) with their authorization servers")
        results = await authorize_many(
            sandbox.config(),
            store=TokenStore(store_dir),
            timeout=timeout,
            browser=sandbox.browser,
            pastes=_no_pastes(),
            progress=printer,
        )
        urls = {server.name: server.url for server in sandbox.servers}
        rows = [["SERVER", "PORT", "OUTCOME", "TIME", "LIST_TOOLS"]]
        for name, result in results.items():
            proof = "-"
            if result.ok and result.tokens is not None:
                try:
                    tools = await list_tools_with_token(urls[name], result.tokens.access_token)
                    proof = f"ok ({', '.join(tools)})"
                except Exception as exc:
                    proof = f"FAILED: {type(exc).__name__}: {exc}"
            rows.append(
                [name, str(result.port or "-"), _outcome(result), f"{result.elapsed:.2f}s", proof]
            )
    print()
    print(_table(rows))
    good = sum(1 for row in rows[1:] if row[2] == "ok" and row[4].startswith("ok"))
    print(f"\n{good}/{len(results)} logins completed and proven with list_tools", flush=True)
    return 0 if good == len(results) else 1


async def _no_pastes() -> Any:
    """The demo's browser is automatic: nothing is read from the terminal."""
    return
    yield  # an empty async generator


async def _login(config: Path, timeout: float, store_dir: Path | None) -> int:
    try:
        servers = json.loads(config.read_text())
    except (OSError, ValueError) as exc:
        print(f"python -m runner: error: cannot read {config}: {exc}", file=sys.stderr)
        return 1
    if isinstance(servers, dict) and isinstance(servers.get("mcp_servers"), dict):
        servers = servers["mcp_servers"]
    if not isinstance(servers, dict):
        print(
            f"python -m runner: error: {config} must hold an object of servers",
            file=sys.stderr,
        )
        return 1
    printer = _Printer()
    try:
        results = await authorize_many(
            servers, store=TokenStore(store_dir), timeout=timeout, progress=printer
        )
    except InvalidServerSpec as exc:
        print(f"python -m runner: error: {config}: {exc}", file=sys.stderr)
        return 1
    rows = [["SERVER", "PORT", "OUTCOME", "TIME"]]
    rows += [
        [r.name, str(r.port or "-"), _outcome(r), f"{r.elapsed:.2f}s"] for r in results.values()
    ]
    print()
    print(_table(rows))
    return 0 if all(r.ok for r in results.values()) else 1


# --- hermes configs: where things are ---------------------------------------------------------


class CommandError(Exception):
    """A bad command line or configuration: one line on stderr, exit code 2."""


@dataclass
class _Place:
    """The config file and the token store one command works with."""

    config: Path
    store: TokenStore
    hermes: bool

    @property
    def token_dir(self) -> Path:
        return self.store.directory


def _place(args: argparse.Namespace, *, urls: dict[str, str] | None = None) -> _Place:
    home = Path(args.hermes_home).expanduser() if args.hermes_home else default_hermes_home()
    config = Path(args.config) if getattr(args, "config", None) else home / "config.yaml"
    if args.store is not None:
        return _Place(config, TokenStore(args.store), hermes=False)
    return _Place(config, HermesTokenStore(home, server_urls=urls), hermes=True)


def _load_config(args: argparse.Namespace) -> tuple[HermesConfig, _Place]:
    """The config's OAuth servers (restricted to ``--server``) and where their tokens go."""
    place = _place(args)
    config = read_hermes_config(place.config)
    wanted: list[str] = list(getattr(args, "server", None) or [])
    if wanted:
        skipped = dict(config.skipped)
        for name in wanted:
            if config.spec(name) is not None:
                continue
            if name in skipped:
                raise CommandError(f"{place.config}: server {name!r} is skipped: {skipped[name]}")
            known = ", ".join(s.name for s in config.specs) or "none"
            raise CommandError(f"{place.config}: no OAuth server {name!r} (OAuth servers: {known})")
        config = HermesConfig(
            source=config.source,
            specs=[s for s in config.specs if s.name in wanted],
            skipped=[],
            notes={n: v for n, v in config.notes.items() if n in wanted},
        )
    if isinstance(place.store, HermesTokenStore):
        place.store.server_urls.update({s.name: s.url for s in config.specs})
    return config, place


@contextmanager
def _reported_warnings(err: IO[str]) -> Iterator[None]:
    """Warnings (an unreadable token file, say) as one ``warning:`` line each."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for item in caught:
                print(f"warning: {item.message}", file=err, flush=True)


def _when(epoch: float | None, now: float) -> str:
    if epoch is None:
        return "no expiry"
    moment = datetime.datetime.fromtimestamp(epoch).astimezone()
    left = epoch - now
    span = abs(left)
    if span < 120:
        rel = f"{span:.0f}s"
    elif span < 7200:
        rel = f"{span / 60:.0f}m"
    elif span < 172800:
        rel = f"{span / 3600:.0f}h"
    else:
        rel = f"{span / 86400:.0f}d"
    return f"{moment:%Y-%m-%d %H:%M} ({'in ' + rel if left >= 0 else rel + ' ago'})"


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).isoformat()


# --- status ---------------------------------------------------------------------------------------


def _login_state(spec: ServerSpec, login: StoredLogin | None, now: float) -> str:
    """The renewal policy's answer (``runner._core._renewal``, the one the provider and
    ``authorize`` carry out), in words."""
    from runner._core._renewal import LoginState, login_state

    if login is None:
        return "not logged in"
    if login.server_url and login.server_url != spec.url:
        return f"stored for another URL ({login.server_url})"
    state = login_state(
        login, name=spec.name, server_url=spec.url, client_id=spec.client_id, now=now
    )
    if state is LoginState.VALID:
        return "logged in"
    if state is LoginState.REFRESHABLE:
        return "expired, refreshable"
    return "expired: log in again"


def _status(args: argparse.Namespace) -> int:
    config, place = _load_config(args)
    now = time.time()
    servers: list[dict[str, Any]] = []
    with _reported_warnings(sys.stderr):
        for spec in config.specs:
            login = place.store.load(spec.name)
            state = _login_state(spec, login, now)
            port = registered_port(login) or spec.redirect_port or None
            servers.append(
                {
                    "name": spec.name,
                    "url": spec.url,
                    "logged_in": state == "logged in",
                    "state": state,
                    "expires_at": _iso(login.expires_at) if login else None,
                    "expires": _when(login.expires_at, now) if login else "-",
                    "scopes": (login.tokens.scope or "").split() if login else [],
                    "redirect_port": port,
                    "notes": config.notes.get(spec.name, []),
                }
            )
    skipped = [{"name": n, "reason": r} for n, r in config.skipped]
    if args.json:
        document = {
            "config": str(place.config),
            "token_dir": str(place.token_dir),
            "servers": servers,
            "skipped": skipped,
        }
        print(json.dumps(document, indent=2))
        return 0
    print(f"config: {place.config}\ntokens: {place.token_dir}\n")
    rows = [["SERVER", "STATE", "EXPIRES", "SCOPES", "PORT", "NOTES"]]
    for row in servers:
        rows.append(
            [
                row["name"],
                row["state"],
                row["expires"],
                " ".join(row["scopes"]) or "-",
                str(row["redirect_port"] or "-"),
                "; ".join(row["notes"]) or "-",
            ]
        )
    rows += [[s["name"], "skipped", "-", "-", "-", s["reason"]] for s in skipped]
    if len(rows) == 1:
        print(f"no mcp_servers in {place.config}")
        return 0
    print(_table(rows))
    return 0


# --- logout ---------------------------------------------------------------------------------------


def _logout(args: argparse.Namespace) -> int:
    if not args.names and not args.all:
        raise CommandError("logout: name at least one server, or pass --all")
    if args.names and args.all:
        raise CommandError("logout: name servers or pass --all, not both")
    place = _place(args)
    names: list[str] = list(args.names)
    if args.all:
        if isinstance(place.store, HermesTokenStore):
            names = place.store.stored_stems()
        else:
            try:
                names = sorted(p.stem for p in place.token_dir.glob("*.json"))
            except OSError as exc:
                raise CommandError(f"cannot list {place.token_dir}: {exc}") from None
        if not names:
            print(f"no stored logins in {place.token_dir}")
            return 0
    for name in names:
        try:
            # Under the server's login lock: a refresh in flight elsewhere finishes first
            # and cannot write the login back once it is gone.
            removed = place.store.logout(name, timeout=_LOGOUT_LOCK_WAIT)
        except InvalidServerSpec as exc:
            if args.all:
                print(f"{name}: left alone ({exc})")
                continue
            raise
        print(f"{name}: logged out" if removed else f"{name}: no stored login")
    return 0


#: How long ``logout`` waits for another process's refresh or login of a server.
_LOGOUT_LOCK_WAIT = 60.0


# --- authorize ------------------------------------------------------------------------------------


def _without_name(name: str, message: str) -> str:
    """A login's error without the server's name it starts with (the line shows it)."""
    return message[len(name) + 2 :] if message.startswith(f"{name}: ") else message


@dataclass
class _Live:
    """One line per server per step (``progress`` and the browser call this, from daemon
    threads: a lock keeps each line whole). The paste prompt is printed once."""

    out: IO[str]
    prompt: bool
    started: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)
    how: dict[str, str] = field(default_factory=dict)
    prompted: bool = False

    def line(self, name: str, text: str) -> None:
        with self.lock:
            elapsed = time.monotonic() - self.started
            print(f"{elapsed:6.1f}s  {name:<16} {text}", file=self.out, flush=True)

    def progress(self, event: Event) -> None:
        match event:
            case PasteNotUsed(name=None):
                self.line("paste", f"{event}; paste again")
            case PasteNotUsed(name=str(name)) | PasteRefused(name=str(name)):
                self.line(name, f"{event}; paste again")
            case UsingStoredLogin(name=str(name)):
                self.how[name] = "stored login"
                self.line(name, "reusing its stored login")
            case Refreshing(name=str(name)):
                self.how[name] = "refreshed"
                self.line(name, "refreshing its stored login")
            case WaitingForBrowser(name=str(name)):
                self.line(name, "waiting for the browser")
                if self.prompt:
                    self._prompt()
            case CallbackReceived(name=str(name), source=source):
                self.how[name] = "pasted" if source == "paste" else "browser"
                self.line(name, "exchanging the code for tokens")
            case Finished(name=name, result=result):
                if result.error is not None:
                    self.line(name, f"failed: {_without_name(name, str(result.error))}")
                else:
                    self.line(name, "done" if result.tokens is not None else str(event))
            case Listening():
                pass  # the URL line says the port
            case _:
                self.line(event.name or "runner", str(event))

    def _prompt(self) -> None:
        with self.lock:
            if self.prompted:
                return
            self.prompted = True
            print(
                "\nIf the browser cannot reach this machine, paste the address it lands on "
                "here (for any of the logins) and press Enter.\n",
                file=self.out,
                flush=True,
            )

    def browser(self, *, open_it: bool) -> Callable[[str, ServerSpec], None]:
        def browser(url: str, spec: ServerSpec) -> None:
            self.line(spec.name, f"open this URL to log in: {url}")
            if not open_it:
                return
            try:
                opened = webbrowser.open(url)
            except Exception:
                opened = False
            if not opened:
                self.line(spec.name, "no browser could be opened: open the URL above yourself")

        return browser


async def _run_authorize(
    specs: list[ServerSpec], store: TokenStore, timeout: float, live: _Live, open_it: bool
) -> dict[str, FlowResult]:
    return await authorize_many(
        specs,
        store=store,
        timeout=timeout,
        browser=live.browser(open_it=open_it),
        progress=live.progress,
    )


def _authorize(args: argparse.Namespace) -> int:
    config, place = _load_config(args)
    out = sys.stderr if args.json else sys.stdout
    live = _Live(out=out, prompt=stdin_is_terminal())
    if not args.json:
        print(f"config: {place.config}\ntokens: {place.token_dir}", file=out, flush=True)
    for name, reason in config.skipped:
        live.line(name, f"skipped: {reason}")
    for name, notes in config.notes.items():
        for note in notes:
            live.line(name, f"note: {note}")
    results: dict[str, FlowResult] = {}
    if config.specs and not args.no_browser:
        register_system_browsers()  # before logins open them from their threads
    if config.specs:
        with _reported_warnings(out):
            results = anyio.run(
                _run_authorize, config.specs, place.store, args.timeout, live, not args.no_browser
            )
    servers: list[dict[str, Any]] = [
        {
            "name": r.name,
            "ok": r.ok,
            "how": live.how.get(r.name) or ("browser" if r.interactive else "-"),
            "port": r.port,
            "elapsed": round(r.elapsed, 3),
            "error": None if r.error is None else str(r.error),
            "error_type": None if r.error is None else type(r.error).__name__,
        }
        for r in results.values()
    ]
    ok = all(r.ok for r in results.values())
    if args.json:
        document = {
            "config": str(place.config),
            "token_dir": str(place.token_dir),
            "ok": ok,
            "servers": servers,
            "skipped": [{"name": n, "reason": r} for n, r in config.skipped],
        }
        print(json.dumps(document, indent=2), flush=True)
        return 0 if ok else 1
    rows = [["SERVER", "RESULT", "HOW", "PORT", "TIME", "DETAIL"]]
    for row in servers:
        rows.append(
            [
                str(row["name"]),
                "ok" if row["ok"] else "FAILED",
                str(row["how"]),
                str(row["port"] or "-"),
                f"{row['elapsed']:.1f}s",
                "-" if row["ok"] else f"{row['error_type']}: {row['error']}",
            ]
        )
    rows += [[n, "skipped", "-", "-", "-", r] for n, r in config.skipped]
    print()
    if len(rows) == 1:
        print(f"no mcp_servers in {place.config}: nothing to log in to")
        return 0
    print(_table(rows))
    good = sum(1 for r in results.values() if r.ok)
    print(f"\n{good}/{len(results)} OAuth servers logged in, {len(config.skipped)} skipped")
    return 0 if ok else 1


# --- the command line -----------------------------------------------------------------------------


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def _where_options(parser: argparse.ArgumentParser, *, config: bool = True) -> None:
    if config:
        parser.add_argument(
            "config",
            nargs="?",
            default=None,
            help="hermes config.yaml (or .json); default: HERMES_HOME/config.yaml",
        )
    parser.add_argument(
        "--hermes-home",
        default=os.environ.get("HERMES_HOME") or None,
        metavar="DIR",
        help="hermes home: its config.yaml, its mcp-tokens/ (default: $HERMES_HOME, ~/.hermes)",
    )
    parser.add_argument(
        "--store",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep tokens in DIR in this library's own format instead of hermes's",
    )


def _prog() -> str:
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name if name and name not in ("__main__.py", "-c", "-m") else "python -m runner"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_prog(),
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    authorize = commands.add_parser(
        "authorize", help="log in to every OAuth server of a hermes config"
    )
    _where_options(authorize)
    authorize.add_argument(
        "--server", action="append", metavar="NAME", help="only this server (repeatable)"
    )
    authorize.add_argument(
        "--no-browser", action="store_true", help="print the URLs; do not open a browser"
    )
    authorize.add_argument(
        "--timeout", type=_positive, default=300.0, help="seconds per login (default: 300)"
    )
    authorize.add_argument("--json", action="store_true", help="the results as JSON on stdout")
    status = commands.add_parser("status", help="which servers are logged in, until when")
    _where_options(status)
    status.add_argument("--server", action="append", metavar="NAME", help="only this server")
    status.add_argument("--json", action="store_true", help="as JSON")
    logout = commands.add_parser("logout", help="forget stored logins")
    logout.add_argument("names", nargs="*", metavar="NAME", help="the servers to log out of")
    logout.add_argument("--all", action="store_true", help="every stored login")
    _where_options(logout, config=False)
    demo = commands.add_parser("demo", help="log in to N local sandbox servers at once")
    demo.add_argument("--servers", type=int, default=4, metavar="N", help="default: 4")
    demo.add_argument("--timeout", type=_positive, default=60.0, help="seconds per login")
    login = commands.add_parser("login", help="log in to the servers of a JSON config")
    login.add_argument("config", type=Path, help='{"name": {"url": ..., "oauth": {...}}}')
    login.add_argument("--timeout", type=_positive, default=300.0, help="seconds per login")
    login.add_argument("--store", type=Path, default=None, help="token directory")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            if not 1 <= args.servers <= 64:
                parser.error("--servers must be between 1 and 64")
            with tempfile.TemporaryDirectory(prefix="runner-demo-") as tmp:
                return anyio.run(_demo, args.servers, args.timeout, Path(tmp))
        if args.command == "login":
            return anyio.run(_login, args.config, args.timeout, args.store)
        command = {"authorize": _authorize, "status": _status, "logout": _logout}[args.command]
        return command(args)
    except (CommandError, InvalidServerSpec, TokenStoreError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: every login was stopped", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (``status --json | head``): not an error of ours. Point
        # stdout at nothing so the interpreter's final flush does not raise again.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
