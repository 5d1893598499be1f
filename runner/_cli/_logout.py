"""``logout NAME ... | --all``: revoke each server's stored tokens (RFC 7009) where its server
offers it, then remove its login, each under its server's login lock (``runner.logout``).

Per server: one line per token (revoked, or why not), then ``logged out``, ``no stored
login`` or ``not logged out (why)``. ``--all`` logs out every file of the store it reads as a
login and carries on past a failure; a file it cannot read as one is named, left alone and
counted as not logged out. Exit 0 when every server was logged out (or had nothing stored),
1 when any was not; a token directory that is a symlink is refused (exit 2).
"""

from __future__ import annotations

import argparse
import sys

import anyio

from runner._cli._common import reported_warnings, where
from runner._cli._errors import CommandError, printable
from runner._core._spec import check_server_name
from runner._parent._logout import logout as logout_server
from runner._parent._refresher import SharedTlsContext
from runner._stores._token_store import TokenStore
from runner.errors import InvalidServerSpec, TokenStoreError

__all__ = ["LOGOUT_LOCK_WAIT", "REVOCATION_TIMEOUT", "logout"]


def logout(args: argparse.Namespace) -> int:
    if not args.names and not args.all:
        raise CommandError("logout: name at least one server, or pass --all")
    if args.names and args.all:
        raise CommandError("logout: name servers or pass --all, not both")
    place = where(args)
    store = place.store
    # Refused before anything is read: a symlinked token directory could name any folder.
    store.check_own_directory()
    failed = 0
    names: list[str] = list(args.names)
    if args.all:
        survey = store.survey()
        names = list(survey.logins)
        for stranger in survey.strangers:
            failed += 1
            print(printable(f"{stranger.path}: not logged out ({stranger.message})"), flush=True)
        if not names and not survey.strangers:
            print(printable(f"no stored logins in {place.token_dir}"))
            return 0
    else:
        for name in names:
            check_server_name(name)  # a mistyped name is a bad command line (exit 2)
    with reported_warnings(sys.stderr):
        failed += anyio.run(_log_out, names, store)
    return 1 if failed else 0


async def _log_out(names: list[str], store: TokenStore) -> int:
    """Log out of each server in turn, carrying on past a failure; how many failed."""
    tls = SharedTlsContext()
    failed = 0
    for name in names:
        try:
            result = await logout_server(
                name,
                store=store,
                timeout=REVOCATION_TIMEOUT,
                lock_timeout=LOGOUT_LOCK_WAIT,
                tls=tls,
            )
        except InvalidServerSpec as exc:
            failed += 1
            print(printable(f"{name}: not logged out ({exc})"), flush=True)
            continue
        except TokenStoreError as exc:  # NotALoginFile, LoginLockTimeout, a file that stays
            failed += 1
            print(printable(f"{name}: not logged out ({exc.message})"), flush=True)
            continue
        for token in result.tokens:
            print(printable(f"{name}: {token}"), flush=True)  # a server's words: escaped
        print(f"{name}: logged out" if result.had_login else f"{name}: no stored login", flush=True)
    return failed


#: How long ``logout`` waits for another process's refresh or login of a server.
LOGOUT_LOCK_WAIT = 60.0
#: How long the revocation requests of one server may take, together.
REVOCATION_TIMEOUT = 30.0
