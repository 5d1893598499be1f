"""``logout NAME ... | --all``: forget stored logins, each under its server's login lock."""

from __future__ import annotations

import argparse

from runner._cli._common import where
from runner._cli._errors import CommandError
from runner._stores._hermes_store import HermesTokenStore
from runner.errors import InvalidServerSpec

__all__ = ["LOGOUT_LOCK_WAIT", "logout"]


def logout(args: argparse.Namespace) -> int:
    if not args.names and not args.all:
        raise CommandError("logout: name at least one server, or pass --all")
    if args.names and args.all:
        raise CommandError("logout: name servers or pass --all, not both")
    place = where(args)
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
            removed = place.store.logout(name, timeout=LOGOUT_LOCK_WAIT)
        except InvalidServerSpec as exc:
            if args.all:
                print(f"{name}: left alone ({exc})")
                continue
            raise
        print(f"{name}: logged out" if removed else f"{name}: no stored login")
    return 0


#: How long ``logout`` waits for another process's refresh or login of a server.
LOGOUT_LOCK_WAIT = 60.0
