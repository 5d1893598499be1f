"""``authorize``: log in to every OAuth server of a hermes config at once, one line per step
per server (the live view, ``Live``, matching on the progress events' types), then a table."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import webbrowser
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

import anyio

from runner._cli._common import load_config, reported_warnings, table
from runner._cli._errors import printable
from runner._cli._flow import with_flow
from runner._core._events import (
    CallbackReceived,
    DeviceCodeIssued,
    Event,
    Finished,
    Listening,
    PasteNotUsed,
    PasteRefused,
    Refreshing,
    UsingStoredLogin,
    WaitingForBrowser,
)
from runner._core._remote import remote_without_display, tunnel_hint
from runner._core._spec import FlowResult, ServerSpec
from runner._parent._offloop import register_system_browsers
from runner._parent._runner import authorize_many
from runner._parent._terminal import stdin_is_terminal
from runner._stores._token_store import TokenStore

__all__ = ["Live", "authorize"]


def local_user(env: Mapping[str, str]) -> str:
    """This process's user name, for the ``ssh`` line: $USER, $LOGNAME, else the password
    database's; "" when none is known (the line then says ``$USER``)."""
    name = env.get("USER") or env.get("LOGNAME")
    if name:
        return name
    try:
        import getpass

        return getpass.getuser()
    except (OSError, KeyError, ImportError):
        return ""


def without_name(name: str, message: str) -> str:
    """A login's error without the server's name it starts with (the line shows it)."""
    return message[len(name) + 2 :] if message.startswith(f"{name}: ") else message


@dataclass
class Live:
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
            # Names and texts come from the config and the servers: escaped (printable).
            print(
                f"{elapsed:6.1f}s  {printable(name):<16} {printable(text)}",
                file=self.out,
                flush=True,
            )

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
            case DeviceCodeIssued(name=str(name)):
                self.how[name] = "device"
                self._device_code(name, event)
            case CallbackReceived(name=str(name), source=source):
                self.how[name] = {"paste": "pasted", "device": "device"}.get(source, "browser")
                text = str(event) if source == "device" else "exchanging the code for tokens"
                self.line(name, text)
            case Finished(name=name, result=result):
                if result.error is not None:
                    self.line(name, f"failed: {without_name(name, str(result.error))}")
                else:
                    self.line(name, "done" if result.tokens is not None else str(event))
            case Listening():
                pass  # the URL line says the port
            case _:
                self.line(event.name or "runner", str(event))

    def _device_code(self, name: str, event: DeviceCodeIssued) -> None:
        """A device login's code, set apart from the other lines: a person must read it.
        (The code and the addresses are printable: ``runner._core._device`` checks them.)"""
        self.line(name, str(event))
        minutes = max(1, round(event.expires_in / 60))
        complete = event.verification_uri_complete
        also = f"    or open {complete}\n" if complete else ""
        with self.lock:
            print(
                f"\n  >>> open {event.verification_uri} on any device and enter the code\n\n"
                f"        {event.user_code}\n\n{also}"
                f"    (for {name}; it expires in about {minutes} min)\n",
                file=self.out,
                flush=True,
            )

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

    def browser(
        self, *, open_it: bool, env: Mapping[str, str] | None = None
    ) -> Callable[[str, ServerSpec], None]:
        """The ``browser=`` callback: the URL printed, then opened unless ``open_it`` is False
        or ``env`` (default ``os.environ``) says SSH with no display; there the exact
        ``ssh -L`` line for this login's port is printed before the URL."""
        environ = os.environ if env is None else env
        remote = remote_without_display(environ)

        def browser(url: str, spec: ServerSpec) -> None:
            hint = tunnel_hint(environ, url, local_user(environ))
            if hint is not None:
                with self.lock:
                    print("\n" + "\n".join(printable(h) for h in hint) + "\n", file=self.out)
            self.line(spec.name, f"open this URL to log in: {url}")
            if not open_it or remote:  # over SSH with no display no browser can show it
                return
            try:
                opened = webbrowser.open(url)
            except Exception:
                opened = False
            if not opened:
                self.line(spec.name, "no browser could be opened: open the URL above yourself")

        return browser


async def run_authorize(
    specs: list[ServerSpec], store: TokenStore, timeout: float, live: Live, open_it: bool
) -> dict[str, FlowResult]:
    return await authorize_many(
        specs,
        store=store,
        timeout=timeout,
        browser=live.browser(open_it=open_it),
        progress=live.progress,
    )


def authorize(args: argparse.Namespace) -> int:
    config, place = load_config(args)
    config.specs[:] = with_flow(config.specs, args.flow)
    out = sys.stderr if args.json else sys.stdout
    live = Live(out=out, prompt=stdin_is_terminal())
    if not args.json:
        print(
            f"config: {printable(str(place.config))}\ntokens: {printable(str(place.token_dir))}",
            file=out,
            flush=True,
        )
    for name, reason in config.skipped:
        live.line(name, f"skipped: {reason}")
    for name, notes in config.notes.items():
        for note in notes:
            live.line(name, f"note: {note}")
    results: dict[str, FlowResult] = {}
    if config.specs and not args.no_browser:
        register_system_browsers()  # before logins open them from their threads
    if config.specs:
        with reported_warnings(out):
            results = anyio.run(
                run_authorize, config.specs, place.store, args.timeout, live, not args.no_browser
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
        print(f"no mcp_servers in {printable(str(place.config))}: nothing to log in to")
        return 0
    print(table(rows))
    good = sum(1 for r in results.values() if r.ok)
    print(f"\n{good}/{len(results)} OAuth servers logged in, {len(config.skipped)} skipped")
    return 0 if ok else 1
