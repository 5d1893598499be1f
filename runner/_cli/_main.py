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
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from runner._cli._errors import CommandError
from runner.errors import InvalidServerSpec, TokenStoreError

__all__ = ["main"]


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
    authorize.add_argument(
        "--flow",
        choices=("browser", "device"),
        default=None,
        help="log in to every server this way (default: each server's oauth.flow, else "
        "browser); device: enter a code on any device (RFC 8628), no browser needed here",
    )
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
    login.add_argument(
        "--flow",
        choices=("browser", "device"),
        default=None,
        help="log in to every server this way (default: each server's own flow)",
    )
    login.add_argument("--store", type=Path, default=None, help="token directory")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        # Each command's module is imported only when it runs: ``--help`` and a mistyped
        # command line cost no SDK, no event loop, no store.
        if args.command == "demo":
            if not 1 <= args.servers <= 64:
                parser.error("--servers must be between 1 and 64")
            import anyio

            from runner._cli._demo import demo

            with tempfile.TemporaryDirectory(prefix="runner-demo-") as tmp:
                return anyio.run(demo, args.servers, args.timeout, Path(tmp))
        if args.command == "login":
            import anyio

            from runner._cli._demo import login_json

            return anyio.run(login_json, args.config, args.timeout, args.store, args.flow)
        if args.command == "authorize":
            from runner._cli._authorize import authorize

            return authorize(args)
        if args.command == "status":
            from runner._cli._status import status

            return status(args)
        from runner._cli._logout import logout

        return logout(args)
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
