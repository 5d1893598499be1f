"""``portlease ls`` and ``portlease gc``: look at and clean a lease registry. I/O.

Exit codes: 0 ok; 1 the registry cannot be used (one line ``portlease: error: ...`` on stderr,
never a traceback: an unsafe directory, a lock that stays taken, a file that cannot be read or
written); 2 usage error (argparse), or a registry directory named by ``--dir`` or
``$PORTLEASE_DIR`` that does not exist (a mistyped path: said on stderr, nothing created).

Neither command ever creates the registry directory. A missing default directory means that
nothing has leased a port on this machine yet: ``ls`` prints ``no leases`` (``[]`` with
``--json``) and ``gc`` removes nothing, both with exit 0.

A lease file that had to be moved aside (garbage, nested too deep, a FIFO, a directory or a
huge file in its place) is reported on stderr as ``portlease: warning: ...`` and the command
goes on with an empty table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from portlease import _procs
from portlease.errors import PortleaseError
from portlease.location import default_directory
from portlease.records import LeaseRecord, record_to_json
from portlease.registry import Registry

__all__ = ["main"]

_COLUMNS = ("PORT", "HOST", "OWNER", "PID", "PROCESS", "AGE", "STATE")


def _age(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def _row(record: LeaseRecord, stale: bool, now: float) -> tuple[str, ...]:
    pid = str(record.pid) if record.server_pid is None else f"{record.pid}>{record.server_pid}"
    process = "-"
    if not stale:
        serving = record.server_pid if record.server_pid is not None else record.pid
        process = _procs.process_name(serving) or _procs.process_name(record.pid) or "?"
    return (
        str(record.port),
        record.host,
        record.owner,
        pid,
        process,
        _age(now - record.created),
        "stale" if stale else "live",
    )


def _print_table(rows: Sequence[tuple[str, ...]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in (_COLUMNS, *rows)) for i in range(len(_COLUMNS))]
    for row in (_COLUMNS, *rows):
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        out.write("  ".join(cells).rstrip() + "\n")


def _ls(registry: Registry, args: argparse.Namespace, out: TextIO) -> int:
    entries = [(r, stale) for r, stale in registry.list_states() if args.all or not stale]
    if args.json:
        payload = [{**record_to_json(r), "state": "stale" if s else "live"} for r, s in entries]
        out.write(json.dumps(payload, indent=2) + "\n")
        return 0
    if not entries:
        out.write("no leases\n")
        return 0
    now = time.time()
    _print_table([_row(r, stale, now) for r, stale in entries], out)
    return 0


def _gc(registry: Registry, args: argparse.Namespace, out: TextIO) -> int:
    removed = registry.prune()
    out.write(f"removed {len(removed)} stale lease(s)\n")
    if removed:
        now = time.time()
        _print_table([_row(r, True, now) for r in removed], out)
    return 0


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--dir",
        metavar="DIR",
        help=f"registry directory (default: $PORTLEASE_DIR, else {default_directory()})",
    )
    parser = argparse.ArgumentParser(
        prog="portlease", description="Inspect and clean the loopback port lease registry."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    ls = commands.add_parser("ls", parents=[common], help="list leases (live ones by default)")
    ls.add_argument("--json", action="store_true", help="print a JSON array for scripts")
    ls.add_argument("--all", action="store_true", help="include stale leases")
    ls.set_defaults(run=_ls)
    gc = commands.add_parser("gc", parents=[common], help="remove stale leases")
    gc.set_defaults(run=_gc)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code."""
    args = _parser().parse_args(argv)
    code = 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            missing = _missing_directory(args.dir)
            if missing is not None:
                code = _report_missing(missing, args, sys.stdout)
                return code
            registry = Registry(args.dir, create=False)
            code = args.run(registry, args, sys.stdout)
            sys.stdout.flush()
        except PortleaseError as exc:
            _say("error", str(exc))
        except BrokenPipeError:
            code = 0  # output cut short by the reader (``| head``): not an error
        except OSError as exc:
            _say("error", str(exc))
        except KeyboardInterrupt:
            code = 130
        except Exception as exc:  # the promise is one line, never a traceback
            _say("error", f"unexpected {type(exc).__name__}: {exc} (a bug: please report it)")
        finally:
            for warning in caught:
                _say("warning", str(warning.message))
    return code


def _missing_directory(given: str | None) -> tuple[Path, bool] | None:
    """(the registry directory, whether the person named it) when it does not exist, else None.

    Named: ``--dir`` or ``$PORTLEASE_DIR``. ``lexists``: a dangling link is not "missing" (the
    registry's own check then says what it is).
    """
    explicit = given is not None or bool(os.environ.get("PORTLEASE_DIR"))
    path = Path(given) if given is not None else default_directory()
    return None if os.path.lexists(path) else (path, explicit)


def _report_missing(missing: tuple[Path, bool], args: argparse.Namespace, out: TextIO) -> int:
    """What ``ls``/``gc`` say about a registry directory that does not exist (none is created)."""
    path, explicit = missing
    if explicit:
        _say(
            "error",
            f"no registry directory {path}: it does not exist (is the path right?); "
            "nothing was created",
        )
        return 2
    if args.command == "gc":
        out.write("removed 0 stale lease(s)\n")
    elif args.json:
        out.write("[]\n")
    else:
        out.write("no leases\n")
    return 0


def _say(level: str, text: str) -> None:
    """One line on stderr, whatever ``text`` holds (a path may contain a newline)."""
    flat = " ".join(text.splitlines())
    print(f"portlease: {level}: {flat}", file=sys.stderr)
