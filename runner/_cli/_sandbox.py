"""``sandbox --hermes-home DIR``: local sandbox servers in the foreground, and a hermes home that
points at them, so that ``status`` and ``authorize`` can be tried with no account, no network
and no real hermes home.

Guarantees:
    * The servers listen on 127.0.0.1 only (``runner.sandbox``); their consent is automatic, so
      any browser that opens an authorization URL (the system's, or ``--no-browser`` and a
      paste) finishes the login.
    * ``DIR/config.yaml`` is written (0600, atomically) only when no file is there or the one
      there was written by this command (its first line says so): a real hermes config is never
      overwritten (exit 2, one line). DIR is created 0700 when missing.
    * It serves until SIGINT (Ctrl-C) or SIGTERM, then stops every server and removes the
      config it wrote if it is unchanged (it names ports that are gone); tokens in
      ``DIR/mcp-tokens/`` are left as they are. The wait is ``sigwait``: no polling.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Final

from runner._cli._errors import CommandError, printable

__all__ = ["MARK", "config_text", "serve_sandbox"]

#: The first line of every config.yaml this command writes.
MARK: Final = "# written by `mcp-oauth sandbox`: these servers live while that command runs"


def config_text(servers: dict[str, dict[str, str]]) -> str:
    """The hermes ``config.yaml`` for the sandbox's servers (each one ``auth: oauth``).

    Names and URLs are the sandbox's own (``sandbox-N``, ``http://127.0.0.1:PORT/mcp``), so
    they are written as plain YAML scalars, quoted for safety."""
    lines = [MARK, "mcp_servers:"]
    for name, entry in servers.items():
        lines += [f'  "{name}":', f'    url: "{entry["url"]}"', "    auth: oauth"]
    return "\n".join(lines) + "\n"


def _ours(path: Path) -> bool:
    """Whether ``path`` is missing or a config this command wrote."""
    try:
        with path.open("r", encoding="utf-8", errors="replace") as file:
            return file.readline().rstrip("\n") == MARK
    except FileNotFoundError:
        return True
    except OSError:
        return False


def _write(path: Path, text: str) -> None:
    """``text`` to ``path`` through a temporary file and ``os.replace`` (0600)."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".config.yaml.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def serve_sandbox(args: argparse.Namespace) -> int:
    """Run the command; return its exit code (0 once stopped by a signal)."""
    from runner.sandbox import Sandbox  # the demo's servers: only this command loads them

    home = Path(args.hermes_home).expanduser()
    config = home / "config.yaml"
    if not _ours(config):
        raise CommandError(
            f"{config} exists and was not written by `mcp-oauth sandbox`: not overwriting "
            "it; give an empty or new --hermes-home DIR"
        )
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise CommandError(f"cannot create {home}: {exc.strerror or exc}") from None
    stop = {signal.SIGINT, signal.SIGTERM}
    # Blocked before the sandbox starts its threads (they inherit the mask), so that only
    # sigwait below receives them: the foreground waits without polling.
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, stop)
    try:
        with Sandbox(servers=args.servers) as sandbox:
            text = config_text(sandbox.config())
            _write(config, text)
            where = printable(str(home))
            print(
                f"sandbox: {args.servers} server(s) on 127.0.0.1, consent automatic\n"
                f"config:  {printable(str(config))}\n"
                f"try:     mcp-oauth status --hermes-home {where}\n"
                f"         mcp-oauth authorize --hermes-home {where} [--no-browser]\n"
                "Ctrl-C stops the servers.",
                flush=True,
            )
            received = signal.sigwait(stop)
            try:
                if config.read_text(encoding="utf-8") == text:
                    config.unlink()
            except OSError:
                pass  # changed or gone: it is someone else's now
        name = signal.Signals(received).name
        print(f"sandbox: stopped ({name}); tokens kept in {where}/mcp-tokens", file=sys.stderr)
        return 0
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
