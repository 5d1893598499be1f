"""``python -m runner`` (also ``mcp-oauth``): the command line's parser and dispatch.

Each command's module is imported only when it runs, so ``--help``, ``--version`` and a
mistyped command line load no SDK, no event loop, no store (``tests`` check the modules a
``--help`` loads). The help text is ``DESCRIPTION``, plain text (this docstring is not shown).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runner._cli._errors import CommandError, printable
from runner.errors import InvalidServerSpec, TokenStoreError

__all__ = ["DESCRIPTION", "DISTRIBUTION", "main"]

#: The installed distribution whose version ``--version`` prints (pyproject.toml's name).
DISTRIBUTION = "mcp-oauth-flows"

#: What ``--help`` says before the options: plain text, as a terminal shows it.
DESCRIPTION = """\
Log in to MCP servers with OAuth, all at once; see and forget the logins.

commands:
  authorize [CONFIG]   log in to the OAuth servers of a hermes-agent config.yaml (or the
                       same shape in JSON), all at once: stored logins are reused, expired
                       ones refreshed, the rest log in through the browser (or a pasted
                       address); one line per step per server, then a table
  status [CONFIG]      per OAuth server: logged in or not, expiry, scopes, registered port
  logout NAME ...      forget stored logins (--all: every one)
  login FILE           log in to the servers of a JSON file or a hermes config.yaml
  demo                 the sandbox quick start: local servers, an automatic browser
  sandbox              serve local sandbox servers and write a hermes home naming them, to
                       try status and authorize with no account (--hermes-home DIR)

where: the hermes home is --hermes-home, else $HERMES_HOME, else ~/.hermes; CONFIG defaults
to its config.yaml, and tokens go to its mcp-tokens/ in hermes's own format. --store DIR
keeps tokens in this library's format instead. ${VAR} in a server's url and oauth options
is read from the environment, as hermes reads it.

exit codes: 0 success; 1 a login failed; 2 a bad command line or configuration (one line
on stderr, never a traceback); 130 interrupted.
"""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description as written; every option's default shown: its value, or (where the
    default is "none given", None) the help text says what happens then."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (
            "default" in text
            or action.default in (None, False, argparse.SUPPRESS)
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)"


class _Version(argparse.Action):
    """``--version``: the installed distribution's version, read only when asked for
    (``importlib.metadata`` is not free, and ``--help`` should not pay for it)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version(DISTRIBUTION)
        except PackageNotFoundError:
            found = "unknown (not installed)"
        print(f"{parser.prog} {found}")
        parser.exit()


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def _servers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError("must be between 1 and 64")
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
        help="hermes home: its config.yaml, its mcp-tokens/ (default: $HERMES_HOME, else "
        "~/.hermes)",
    )
    parser.add_argument(
        "--store",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep tokens in DIR in this library's own format instead of hermes's "
        "(default: hermes's mcp-tokens/)",
    )


def _prog() -> str:
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name if name and name not in ("__main__.py", "-c", "-m") else "python -m runner"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_prog(), description=DESCRIPTION, formatter_class=_HelpFormatter
    )
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_subparser_class())
    authorize = commands.add_parser(
        "authorize", help="log in to every OAuth server of a hermes config"
    )
    _where_options(authorize)
    authorize.add_argument(
        "--server",
        action="append",
        metavar="NAME",
        help="only this server (repeatable; default: every OAuth server)",
    )
    authorize.add_argument(
        "--no-browser", action="store_true", help="print the URLs; do not open a browser"
    )
    authorize.add_argument("--timeout", type=_positive, default=300.0, help="seconds per login")
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
    status.add_argument(
        "--server",
        action="append",
        metavar="NAME",
        help="only this server (repeatable; default: every OAuth server)",
    )
    status.add_argument("--json", action="store_true", help="as JSON")
    logout = commands.add_parser("logout", help="forget stored logins")
    logout.add_argument("names", nargs="*", metavar="NAME", help="the servers to log out of")
    logout.add_argument("--all", action="store_true", help="every stored login")
    _where_options(logout, config=False)
    demo = commands.add_parser("demo", help="log in to N local sandbox servers at once")
    demo.add_argument(
        "--servers", type=_servers, default=4, metavar="N", help="how many servers (1-64)"
    )
    demo.add_argument("--timeout", type=_positive, default=60.0, help="seconds per login")
    sandbox = commands.add_parser(
        "sandbox", help="serve N local sandbox servers and a hermes home naming them"
    )
    sandbox.add_argument(
        "--hermes-home",
        required=True,
        metavar="DIR",
        help="the hermes home to write config.yaml into (never a real one: refused)",
    )
    sandbox.add_argument(
        "--servers", type=_servers, default=2, metavar="N", help="how many servers (1-64)"
    )
    login = commands.add_parser(
        "login", help="log in to the servers of a JSON file or a hermes config.yaml"
    )
    login.add_argument(
        "config",
        type=Path,
        help='a JSON file {"name": {"url": ..., "oauth": {...}}} (or the same under '
        '"mcp_servers"), or a hermes config.yaml',
    )
    login.add_argument("--timeout", type=_positive, default=300.0, help="seconds per login")
    login.add_argument(
        "--no-browser", action="store_true", help="print the URLs; do not open a browser"
    )
    login.add_argument(
        "--flow",
        choices=("browser", "device"),
        default=None,
        help="log in to every server this way (default: each server's own flow)",
    )
    login.add_argument(
        "--store",
        type=Path,
        default=None,
        metavar="DIR",
        help="token directory (default: $MCP_OAUTH_DIR, else the per-user state directory's "
        "mcp-oauth-flows/)",
    )
    return parser


def _subparser_class() -> type[argparse.ArgumentParser]:
    """Subcommands format their help as the main parser does (defaults shown)."""

    class Parser(argparse.ArgumentParser):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("formatter_class", _HelpFormatter)
            super().__init__(*args, **kwargs)

    return Parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        # Each command's module is imported only when it runs: ``--help`` and a mistyped
        # command line cost no SDK, no event loop, no store.
        if args.command == "demo":
            import anyio

            from runner._cli._demo import demo

            with tempfile.TemporaryDirectory(prefix="runner-demo-") as tmp:
                return anyio.run(demo, args.servers, args.timeout, Path(tmp))
        if args.command == "login":
            import anyio

            from runner._cli._demo import login_json

            return login_json(
                args.config, args.timeout, args.store, flow=args.flow, no_browser=args.no_browser
            )
        if args.command == "sandbox":
            from runner._cli._sandbox import serve_sandbox

            return serve_sandbox(args)
        if args.command == "authorize":
            from runner._cli._authorize import authorize

            return authorize(args)
        if args.command == "status":
            from runner._cli._status import status

            return status(args)
        from runner._cli._logout import logout

        return logout(args)
    except (CommandError, InvalidServerSpec, TokenStoreError) as exc:
        # One line, escaped: the message may quote the config's names and values.
        print(f"{parser.prog}: error: {printable(str(exc))}", file=sys.stderr, flush=True)
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
